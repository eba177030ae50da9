"""Run by .venv-kserve's Python: KServe's storage initializer fetching one model.

    .venv-kserve/bin/python benchmarks/kserve_download.py gs://BUCKET/OBJECT DIR

What KServe's `storage-initializer` container does before a predictor starts:
`Storage.download(uri, out_dir)` (for one object: `Blob.download_to_filename`, then
tarfile or zipfile `extractall` by the object's mimetype). STORAGE_EMULATOR_HOST points
google-cloud-storage at the emulator.
"""

import sys

from kserve_storage import Storage

if __name__ == "__main__":
    Storage.download(sys.argv[1], sys.argv[2])
