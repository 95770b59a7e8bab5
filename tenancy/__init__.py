"""A municipality's data as a whole: export it, import it elsewhere, delete it.

Sits above `models` and below `cli`/`api`; nothing here imports from the layers above.
"""
