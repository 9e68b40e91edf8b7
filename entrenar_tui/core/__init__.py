"""All of entrenar's behaviour. No textual, no rich, no printing; torch only inside functions."""
