"""The ``progress`` command line: one Typer app over the core library, the tasks and the flows.

It sits above ``flows/`` in the layering (it may import flows, tasks and ``progress_core``); nothing below
it imports from here. Each module defines ``register(app)`` for one area of commands.
"""
