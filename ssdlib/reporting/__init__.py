"""Book tooling: the notebook runner, tables written beside the executed notebooks, figures and page furniture.
Nothing in the library imports this package; notebooks and scripts do."""
