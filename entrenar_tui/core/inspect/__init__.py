"""`entrenar inspect`: facts about a model read from its headers, checks, comparison."""
