"""Plugin discovery: every plugin, built-in or third party, is a module named by an entry point in group `spcxr_hub`.

`SPCXR_LOAD_PLUGINS` limits autoloading to a comma-separated list of entry-point names (empty: none). A plugin that
fails to import, does not fit the hook specifications, raises in a hook, or registers a name another plugin already
has, is reported with its name and distribution; the other plugins keep working.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from ..errors import SpcxrError, one_line
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

    @property
    def label(self) -> str:
        """How every report about the plugin names it."""
        return f"plugin {self.name!r} (distribution {self.distribution})"


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


class Registrar:
    """The `register` callback one plugin's call of one hook receives: it files what the plugin provides under the
    plugin's name, and reports a name another plugin registered first."""

    hook = ""  # the hook whose callers get this registrar
    table = ""  # the Registry and PluginInfo field it fills
    noun = ""

    def __init__(self, registry: Registry, info: PluginInfo, owners: dict[str, str]):
        self.registry, self.info, self.owners = registry, info, owners  # owners: name → label of its first plugin

    def add(self, name: str, value) -> None:
        if name in self.owners:
            message = f"{self.info.label} registers {self.noun} {name!r}, which {self.owners[name]} already registers"
            self.info.errors.append(message)
            self.clash(name, message)
            return
        self.owners[name] = self.info.label
        getattr(self.registry, self.table)[name] = value
        getattr(self.info, self.table).append(name)

    def clash(self, name: str, message: str) -> None:
        """A second registration of `name`: by default the first one stays."""


class TaskRegistrar(Registrar):
    """`register(task)` in `register_tasks`."""

    hook, table, noun = "register_tasks", "tasks", "task"

    def __call__(self, task: Task) -> None:
        if not isinstance(task, Task):
            raise TaskError(f"register() takes a spcxr_hub.Task, got {type(task).__name__}")
        self.add(task.name, task)

    def clash(self, name: str, message: str) -> None:
        # Which of the two tasks a user means cannot be known: the name is unusable until one plugin is removed.
        self.registry.broken_tasks[name] = message
        self.registry.tasks.pop(name, None)


class ModelFactoryRegistrar(Registrar):
    """`register(name, factory)` in `register_backbones` (see `spcxr_hub.training.model_factories`)."""

    hook, table, noun = "register_backbones", "backbones", "backbone"

    def __call__(self, name: str, factory: Callable) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise TypeError(f"register(name, factory): name must be a non-empty word, got {name!r}")
        if not callable(factory):
            raise TypeError(f"backbone {name!r}: register(name, factory) needs a callable factory")
        self.add(name, factory)


REGISTRARS = (TaskRegistrar, ModelFactoryRegistrar)


def new_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    return manager


def describe(plugin_name: str, manager: pluggy.PluginManager) -> PluginInfo:
    for plugin, dist in manager.list_plugin_distinfo():
        if manager.get_name(plugin) == plugin_name:
            return PluginInfo(plugin_name, dist.project_name, dist.version)
    return PluginInfo(plugin_name, "(not installed)", "")


def failure(error: Exception) -> str:
    return f"{type(error).__name__}: {one_line(error)}"


def check_hooks(manager: pluggy.PluginManager, plugin, info: PluginInfo) -> None:
    """Reports each `@hookimpl` of `plugin` that no hook specification declares: a misspelt hook would never run."""
    hooks = ", ".join(name for name, caller in vars(manager.hook).items() if caller.spec is not None)
    for caller in manager.get_hookcallers(plugin) or ():
        if caller.spec is None and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls()):
            info.errors.append(f"{info.label} implements {caller.name!r}, which is not a hook (hooks: {hooks})")


def autoload(manager: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """Registers the entry points of group `spcxr_hub`, the built-ins included, as `SPCXR_LOAD_PLUGINS` allows."""
    allowed = os.environ.get("SPCXR_LOAD_PLUGINS")
    allowed = None if allowed is None else {name.strip() for name in allowed.split(",") if name.strip()}
    for entry_point in entry_points(group=GROUP):
        if allowed is not None and entry_point.name not in allowed:
            continue
        info = PluginInfo(entry_point.name, entry_point.dist.name if entry_point.dist else "(unknown distribution)",
                          entry_point.dist.version if entry_point.dist else "")
        try:
            module = entry_point.load()
        except Exception as error:
            info.errors.append(f"{info.label} failed to import: {failure(error)}")
            infos[entry_point.name] = info
            continue
        if manager.is_registered(module) or manager.get_plugin(entry_point.name) is not None:
            continue
        infos[entry_point.name] = info
        try:
            manager.register(module, name=entry_point.name)
        except pluggy.PluginValidationError as error:  # a hook taking an argument its specification does not pass
            details = "; ".join(str(error).splitlines())
            info.errors.append(f"{info.label} does not fit the hook specifications: {details}")


def collect(manager: pluggy.PluginManager, infos: dict[str, PluginInfo] | None = None) -> Registry:
    """Calls every plugin's hooks through pluggy, one plugin at a time (`subset_hook_caller` leaves the others
    out), so what a plugin registers, and any failure, is attributed to it and the other plugins still load."""
    registry = Registry(plugins=dict(infos or {}))
    for name, plugin in manager.list_name_plugin():
        if plugin is not None:  # None: a blocked name
            check_hooks(manager, plugin, registry.plugins.setdefault(name, describe(name, manager)))
    for registrar in REGISTRARS:
        owners: dict[str, str] = {}
        implementations = getattr(manager.hook, registrar.hook).get_hookimpls()
        for implementation in implementations:
            info = registry.plugins.setdefault(implementation.plugin_name,
                                               describe(implementation.plugin_name, manager))
            others = [other.plugin for other in implementations if other.plugin is not implementation.plugin]
            try:
                manager.subset_hook_caller(registrar.hook, others)(register=registrar(registry, info, owners))
            except Exception as error:
                info.errors.append(f"{info.label} failed in {registrar.hook}: {failure(error)}")
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
