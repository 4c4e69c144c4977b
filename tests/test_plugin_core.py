import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import replace
from importlib.metadata import EntryPoint

import pytest

import spcxr_covid
import spcxr_lungseg
from spcxr_hub import TaskError, hookimpl
from spcxr_hub.plugins import registry as plugins
from spcxr_hub.plugins.registry import PluginError, UnknownTaskError, collect, get_registry, new_plugin_manager


class Plugin:
    """A plugin object that registers the given tasks (or raises the given error) from its hook."""

    def __init__(self, *tasks, error=None):
        self.tasks, self.error = tasks, error

    @hookimpl
    def register_tasks(self, register):
        if self.error:
            raise self.error
        for task in self.tasks:
            register(task)


def task_named(name):
    return replace(spcxr_covid.TASK, name=name)


def manager_with(**plugin_objects):
    manager = new_plugin_manager()
    for name, plugin in plugin_objects.items():
        manager.register(plugin, name=name)
    return manager


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(plugins, "_registry", None)
    return lambda: get_registry(reload=True)


def test_two_plugins_registering_one_task_name_is_an_error_naming_both_and_other_tasks_still_work():
    registry = collect(manager_with(first=Plugin(task_named("xray")), second=Plugin(task_named("xray")),
                                    lungseg=spcxr_lungseg))
    (error,) = registry.errors
    assert "'first'" in error and "'second'" in error and "'xray'" in error
    with pytest.raises(PluginError, match="'first'.*'second'|'second'.*'first'"):
        registry.task("xray")
    assert registry.task("lungseg") is spcxr_lungseg.TASK


def test_a_plugin_raising_in_its_hook_is_reported_with_its_name_and_the_others_still_work():
    registry = collect(manager_with(broken=Plugin(error=RuntimeError("no weights here")), covid=spcxr_covid))
    (error,) = registry.errors
    assert "plugin 'broken'" in error and "register_tasks" in error and "no weights here" in error
    assert set(registry.tasks) == {"covid"}
    assert registry.plugins["broken"].errors == [error]


def test_a_plugin_failing_to_import_is_reported_and_the_other_entry_points_still_load(monkeypatch, fresh_registry):
    real = plugins.entry_points(group=plugins.GROUP)
    broken = EntryPoint(name="broken", value="spcxr_no_such_plugin_module", group=plugins.GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [broken, *real])
    monkeypatch.setenv("SPCXR_LOAD_PLUGINS", "broken,covid")
    registry = fresh_registry()
    (error,) = registry.errors
    assert "plugin 'broken'" in error and "failed to import" in error and "spcxr_no_such_plugin_module" in error
    assert set(registry.tasks) == {"covid"}


@pytest.mark.parametrize("field, value", [
    ("name", ""), ("kind", "detection"), ("labels", ("only-one",)), ("read_folder", None), ("metrics", ()),
    ("model_id", "vit-s-covid"), ("card", "a card"),
])
def test_a_task_with_an_invalid_required_field_is_a_task_error_naming_the_field(field, value):
    with pytest.raises(TaskError, match=field):
        replace(spcxr_covid.TASK, **{field: value})


def test_a_plugin_registering_something_that_is_not_a_task_is_reported_and_the_others_still_work():
    registry = collect(manager_with(sloppy=Plugin({"name": "dict-task"}), covid=spcxr_covid))
    (error,) = registry.errors
    assert "plugin 'sloppy'" in error and "Task" in error
    assert set(registry.tasks) == {"covid"}


def test_empty_spcxr_load_plugins_loads_no_plugin(monkeypatch, fresh_registry):
    monkeypatch.setenv("SPCXR_LOAD_PLUGINS", "")
    registry = fresh_registry()
    assert registry.tasks == {} and registry.plugins == {}
    with pytest.raises(UnknownTaskError, match="no plugin loaded"):
        registry.task("covid")


def test_unknown_task_error_lists_the_known_tasks():
    registry = collect(manager_with(covid=spcxr_covid, lungseg=spcxr_lungseg))
    with pytest.raises(UnknownTaskError) as raised:
        registry.task("tb")
    assert str(raised.value) == "unknown task 'tb'; known tasks: covid, lungseg"


def test_unregistering_a_plugin_object_removes_its_tasks():
    manager = manager_with(extra=Plugin(task_named("extra")), covid=spcxr_covid)
    assert set(collect(manager).tasks) == {"extra", "covid"}
    manager.unregister(name="extra")
    assert set(collect(manager).tasks) == {"covid"}
