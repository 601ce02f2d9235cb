"""The recorder needs torch, which the test environment does not have: pytest leaves it alone
(run it directly, see its docstring)."""

collect_ignore = ["record_torch.py"]
