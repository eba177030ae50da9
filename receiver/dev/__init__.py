"""Local stand-ins for Google, for the demo, the tests and `receiver token|push|demo|dev`.

`keys`: a dev RSA key that signs push tokens the way Google's would, and its certs.
`tools`: the storage emulator, archive building and push envelopes.
`emulator`: `receiver dev emulator`, the storage emulator in the foreground with a bucket.
`demo`: the whole path on one machine.
`tfserving_standin`: TF Serving's model-status API over real TensorFlow, for the demo.
`cli`: the commands above, added to `receiver` where this package exists.

Not part of the production image (see .dockerignore): nothing outside this package and
the commands above imports it.
"""
