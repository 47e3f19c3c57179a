"""The example backend's tests run against it as an installed plugin (see
tests/example_backend.py: it is put on the path for tests, never installed for users)."""

from tests.example_backend import activate

activate()
