"""Plugin discovery: every plugin, built-in or third party, is a module named by an entry point in group `spcxr_hub`.

`SPCXR_LOAD_PLUGINS` limits autoloading to a comma-separated list of entry-point names (empty: none). A plugin that
fails to import or raises in a hook, or registers a task name another plugin already has, is reported with its
name and distribution; the other plugins keep working.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from ..errors import SpcxrError
from .tasks import Task, TaskError

GROUP = "spcxr_hub"


class PluginError(SpcxrError, RuntimeError):
    """A plugin that could not be used; the message names the plugin and its distribution."""


class UnknownTaskError(SpcxrError, KeyError):
    def __str__(self):
        return self.args[0]


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    tasks: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """What the loaded plugins provide."""

    tasks: dict[str, Task] = field(default_factory=dict)
    backbones: dict[str, Callable] = field(default_factory=dict)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    broken_tasks: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [error for info in self.plugins.values() for error in info.errors]

    def task(self, name: str) -> Task:
        if name in self.broken_tasks:
            raise PluginError(self.broken_tasks[name])
        if name not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none (no plugin loaded)"
            raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known}")
        return self.tasks[name]


def new_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def describe(plugin_name: str, manager: pluggy.PluginManager) -> PluginInfo:
    for plugin, dist in manager.list_plugin_distinfo():
        if manager.get_name(plugin) == plugin_name:
            return PluginInfo(plugin_name, dist.project_name, dist.version)
    return PluginInfo(plugin_name, "(not installed)", "")


def autoload(manager: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """Registers the entry points of group `spcxr_hub`, the built-ins included, as `SPCXR_LOAD_PLUGINS` allows."""
    allowed = os.environ.get("SPCXR_LOAD_PLUGINS")
    allowed = None if allowed is None else {name.strip() for name in allowed.split(",") if name.strip()}
    for entry_point in entry_points(group=GROUP):
        if allowed is not None and entry_point.name not in allowed:
            continue
        distribution = entry_point.dist.name if entry_point.dist else "(unknown distribution)"
        version = entry_point.dist.version if entry_point.dist else ""
        try:
            module = entry_point.load()
        except Exception as error:
            info = PluginInfo(entry_point.name, distribution, version)
            info.errors.append(f"plugin {entry_point.name!r} (distribution {distribution}) failed to import: {error}")
            infos[entry_point.name] = info
            continue
        if manager.is_registered(module) or manager.get_plugin(entry_point.name) is not None:
            continue
        manager.register(module, name=entry_point.name)
        infos[entry_point.name] = PluginInfo(entry_point.name, distribution, version)


def collect(manager: pluggy.PluginManager, infos: dict[str, PluginInfo] | None = None) -> Registry:
    """Calls every plugin's hooks one by one, so a failure is attributed to its plugin and isolated."""
    registry = Registry(plugins=dict(infos or {}))
    owners: dict[str, str] = {}
    for hook_name, kind in (("register_tasks", "tasks"), ("register_backbones", "backbones")):
        for implementation in getattr(manager.hook, hook_name).get_hookimpls():
            plugin = implementation.plugin_name
            info = registry.plugins.setdefault(plugin, describe(plugin, manager))
            label = f"plugin {plugin!r} (distribution {info.distribution})"

            def register(item, factory=None, _kind=kind, _info=info, _label=label, _plugin=plugin):
                if _kind == "tasks":
                    if not isinstance(item, Task):
                        raise TaskError(f"register() takes a spcxr_hub.Task, got {type(item).__name__}")
                    name, value = item.name, item
                else:
                    if not callable(factory):
                        raise TypeError(f"backbone {item!r}: register(name, factory) needs a callable factory")
                    name, value = item, factory
                table = getattr(registry, _kind)
                if name in table or name in registry.broken_tasks:
                    first = owners[f"{_kind}:{name}"]
                    message = f"{_label} registers {_kind[:-1]} {name!r}, which {first} already registers"
                    _info.errors.append(message)
                    if _kind == "tasks":
                        registry.broken_tasks[name] = message
                        table.pop(name, None)
                    return
                owners[f"{_kind}:{name}"] = _label
                table[name] = value
                getattr(_info, _kind).append(name)

            try:
                implementation.function(register=register)
            except Exception as error:
                info.errors.append(f"{label} failed in {hook_name}: {error}")
    return registry


_registry: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The registry of autoloaded plugins, built once per process."""
    global _registry
    if _registry is None or reload:
        manager = new_plugin_manager()
        infos: dict[str, PluginInfo] = {}
        autoload(manager, infos)
        _registry = collect(manager, infos)
    return _registry


def get_task(name: str) -> Task:
    return get_registry().task(name)
