"""Local stand-ins for Google, for the demo, the tests and `receiver token|push|demo`.

`keys`: a dev RSA key that signs push tokens the way Google's would, and its certs.
`tools`: the storage emulator, archive building and push envelopes.
`demo`: the whole path on one machine.

Not part of the production image (see .dockerignore): nothing outside this package and
the commands above imports it.
"""
