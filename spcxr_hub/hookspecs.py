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
    """Call `register(name, factory)` for every backbone the plugin provides: `factory(config_kwargs)` returns a
    model whose forward takes `pixel_values` (B, 1, H, W); names are used as `--backbone NAME`."""
