"""The hooks a plugin implements. Each hook receives a `register` callback, so one plugin can register many things
and old plugins keep working when a hook gains arguments: the registry calls the hooks through pluggy, which passes
an implementation only the arguments it names.

    from spcxr_hub.plugin_api import Task, hookimpl

    @hookimpl
    def register_tasks(register):
        register(Task(name="tuberculosis", ...))
"""

import pluggy

hookspec = pluggy.HookspecMarker("spcxr_hub")
hookimpl = pluggy.HookimplMarker("spcxr_hub")


@hookspec
def register_tasks(register):
    """Call `register(task)` for every `spcxr_hub.plugin_api.Task` the plugin provides."""


@hookspec
def register_backbones(register):
    """Call `register(name, factory)` for every task-model factory the plugin provides (used as `--backbone NAME`):
    `factory(task, init, *, config, image_size, drop_path_rate)` returns a transformers `PreTrainedModel` with the
    task's head, or is a `spcxr_hub.plugin_api.ModelFactory`; see docs/baselines.md."""
