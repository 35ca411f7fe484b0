"""Tasks, the Trainer and what runs inside a fit (step plan gathering, the ledger)."""
