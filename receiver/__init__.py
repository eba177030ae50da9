"""Installs model archives pushed from Cloud Storage into TensorFlow Serving, atomically.

The data flow, and the module that does each step (`help('receiver')` shows this map;
each subpackage's docstring maps its own modules; tests/test_package.py keeps every map
true to the tree and holds the seams between the sides):

    Pub/Sub push ──POST /push──▶ web ── auth ── events ── layout ── intake
                                  │ └─ relay ──▶ the other replicas   │
                        status, metrics (read)                  journal (SQLite)
                                                                      │
    worker (claims jobs) ── installer ── capacity
                                │                 ── fetch ── download (store, stream, sliced)
                                │                         ── unpack (decompress, tar, zip, writer)
                                │                 ── savedmodel, protos, tensorbundle
                                │                 ── servable (rename into place)
                                └── rollout ── modelconfig, tfserving, modeldir, versions
    sync (bucket ──▶ jobs), publish (export ──▶ bucket), cli, runtime (wiring)

Delivery (the HTTP side):
    web           create_app and the routes; every error mapped to JSON in one place
    probelane     gunicorn's gthread worker with a lane for probes and a silence limit
    auth          push-token verification: signature, times, issuer, audience, sender
    certs         Google's signing certs, cached and refreshed sparingly
    events        a delivery body (push, CloudEvent) ──▶ ObjectEvent
    layout        object names ⇄ (model, version); reserved names
    intake        what an event means: queue a job, withdraw a version, or why not
    quarantine    authenticated but unusable bodies, kept for the operator
    relay         a push acted on, forwarded to the other replicas in the background
    peers         who those replicas are (RECEIVER_PEERS), our own addresses left out
Persistence:
    journal       the durable job table, claims under leases
    schema        the journal's database: connections, numbered migrations, meta values
    versions      each installed version's source, size and load state
Install (the worker side):
    worker        the job loop: claim, install, record; retries with backoff
    lease         a claimed job's lease kept while it installs; shutdown and takeover
    installer     one job's pipeline up to the rename
    fetch         bytes into staging: an archive streamed and unpacked, or a directory's files
    capacity      does a version fit TF Serving's memory while it swaps, and the volume
    download      Cloud Storage: listing, one pinned generation as a checked stream, slices
    unpack        an archive into staging, within limits, nothing escaping it
    savedmodel    what TF Serving's loader checks, checked before the rename
    protos        the TensorFlow message fields those checks read
    tensorbundle  how many shards a checkpoint index names
    servable      staging, fsync, the rename into place, crash debris
    rollout       after the rename: models.config, TF Serving's verdict, prune or withdraw
    tfserving     TF Serving's REST model-status API
    modeldir      what the model dir holds; withdrawing versions from it
    modelconfig   TF Serving's --model_config_file, kept listing every model
    sync          the bucket reconciled with the model dir
    readiness     what the sync recorded; startup and readiness, read without storage
Around them:
    config        the frozen Settings built from the declarations; cross-variable rules
    variables     every environment variable the process reads, declared once
    envvars       how a variable is declared (Var) and its value parsed
    vocabulary    outcomes, states and modes as StrEnums
    errors        the one exception tree
    objectref     one object generation with its size and checksums
    status        what /status, the page, the CLI and metrics show
    metrics       Prometheus counters and scrape-time gauges
    logs          JSON or text logs with request and job context
    runtime       builds the collaborators from Settings
    publish       `receiver publish`: check, pack and upload an export
    terminal      the command line's progress bar
    cli           `receiver <command>`
    dev           the demo, its local stand-ins (emulator, dev key, TF Serving), their commands
"""
