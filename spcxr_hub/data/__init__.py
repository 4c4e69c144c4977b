"""Task data: `records` (a task's folder or Hub dataset → records), `task_dataset` (records → a torch dataset),
`layouts` (helpers plugins describe their folder layouts with) and `synthetic` (the phantom radiographs every test
and demo trains on)."""

import importlib


def __getattr__(name):  # `spcxr_hub.data.load_records` … as before `data` became a folder
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(".records", __name__), name)
