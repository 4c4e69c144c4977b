"""The plugin core: hook specifications, the task description plugins register, and the registry that loads them
through entry points."""

from .registry import PluginError, PluginInfo, Registry, UnknownTaskError, collect, get_registry, get_task, new_plugin_manager

__all__ = ["PluginError", "PluginInfo", "Registry", "UnknownTaskError", "collect", "get_registry", "get_task",
           "new_plugin_manager"]
