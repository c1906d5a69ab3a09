"""The ``custos`` command groups for people, one module each (registered in ``services/cli/main.py``)."""
