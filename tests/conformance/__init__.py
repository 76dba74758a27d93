"""The provider conformance suite: one set of tests, parametrized over every adapter.

Rules (see ``test_conformance``): loopback only (127.0.0.1, port 0), the emulator on a scaled
clock, a hard per-test timeout, invariants counted by the emulator itself. A provider joins by
adding one ``ProviderCase`` to ``cases.CASES``.
"""
