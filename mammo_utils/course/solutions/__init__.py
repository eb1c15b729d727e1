"""Reference solutions of the exercises, one module per notebook, under the names of the notebook stubs."""
