"""batchpump test suite."""
