"""Everything a plugin may import from SPCXR Hub, and nothing else: the rest of the package is internal and may
change between releases. The built-in plugins (`plugins/`) and the example (`examples/tuberculosis-plugin`) import
only from here; docs/plugins.md describes each name.

    from spcxr_hub.plugin_api import SINGLE_LABEL, CardText, Task, hookimpl, holdout_split, layout_files

Groups: the hook marker; the task contract (`Task`, its parts, the label kinds); the errors a reader raises; the
native-layout readers; the synthetic-data writers; and, for `register_backbones`, the task-model factory type.
"""

from .data.layouts import class_folders, holdout_split, layout_files, numbered_lines, write_phantoms
from .data.records import LayoutError, UnknownLabelError, label_index, require
from .data.synthetic import sample_findings, write_mask_png, write_png16
from .plugins.hookspecs import hookimpl
from .plugins.tasks import MULTI_LABEL, SEGMENTATION, SINGLE_LABEL, CardText, FinetuneDefaults, Task, TaskError
from .training.model_factories import SCRATCH, ModelFactory, label_fields

__all__ = [
    # hooks
    "hookimpl",
    # the task contract
    "Task", "CardText", "FinetuneDefaults", "SINGLE_LABEL", "MULTI_LABEL", "SEGMENTATION",
    # errors
    "TaskError", "LayoutError", "UnknownLabelError",
    # reading a native layout
    "require", "label_index", "numbered_lines", "layout_files", "class_folders", "holdout_split",
    # writing a synthetic dataset in it
    "write_phantoms", "sample_findings", "write_png16", "write_mask_png",
    # task-model factories (register_backbones)
    "ModelFactory", "label_fields", "SCRATCH",
]
