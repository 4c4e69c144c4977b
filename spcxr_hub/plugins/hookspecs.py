"""The hooks a plugin implements. Each hook receives a `register` callback, so one plugin can register many things
and old plugins keep working when a hook gains arguments (pluggy passes only the arguments an implementation names).

    from spcxr_hub import hookimpl, Task

    @hookimpl
    def register_tasks(register):
        register(Task(name="tuberculosis", ...))
"""

import pluggy

hookspec = pluggy.HookspecMarker("spcxr_hub")
hookimpl = pluggy.HookimplMarker("spcxr_hub")


@hookspec
def register_tasks(register):
    """Call `register(task)` for every `spcxr_hub.Task` the plugin provides."""


@hookspec
def register_backbones(register):
    """Call `register(name, factory)` for every backbone the plugin provides (used as `--backbone NAME`):
    `factory(task, init, *, config, image_size, drop_path_rate)` returns a transformers `PreTrainedModel` with the
    task's head, or a `spcxr_hub.training.backbones.Backbone`; see docs/baselines.md."""
