"""Security tests: TLS, the reply sender, least privilege (see conftest.py)."""
