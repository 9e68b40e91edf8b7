"""LoRA adapters: read PEFT adapters (adapter.py), merge them into a base (merge.py), inspect
them (inspect.py: ranks, SVD, problems), convert them between formats (convert.py), and plan
a LoRA run's memory (plan.py).

Import the submodule you need; this package imports nothing so `import entrenar_tui.core.lora`
stays cheap.
"""
