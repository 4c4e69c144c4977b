import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
import types
from dataclasses import replace
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import spcxr_covid
import spcxr_lungseg
from spcxr_hub import TaskError, hookimpl, plugin_api
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


class NoArguments:
    """A plugin whose hook names none of the hook's arguments."""

    calls = 0

    @hookimpl
    def register_tasks(self):
        NoArguments.calls += 1


def test_hooks_are_called_through_pluggy_which_passes_only_the_arguments_an_implementation_names():
    registry = collect(manager_with(quiet=NoArguments(), covid=spcxr_covid))
    assert NoArguments.calls == 1 and not registry.errors and set(registry.tasks) == {"covid"}


def test_each_plugin_is_called_through_the_plugin_manager_on_its_own():
    manager = manager_with(covid=spcxr_covid, lungseg=spcxr_lungseg, extra=Plugin(task_named("extra")))
    calls = []
    manager.add_hookcall_monitoring(lambda hook, impls, kwargs: calls.append((hook, [i.plugin_name for i in impls])),
                                    lambda *args: None)
    collect(manager)
    assert sorted(calls) == [("register_tasks", ["covid"]), ("register_tasks", ["extra"]), ("register_tasks", ["lungseg"])]


class Misspelt:
    @hookimpl
    def register_task(self, register):
        register(task_named("never"))


def test_a_misspelt_hook_is_reported_with_the_plugin_name_and_the_real_hooks():
    registry = collect(manager_with(typo=Misspelt(), covid=spcxr_covid))
    (error,) = registry.errors
    assert "plugin 'typo'" in error and "'register_task'" in error and "register_tasks" in error
    assert set(registry.tasks) == {"covid"}


class ExtraArgument:
    @hookimpl
    def register_tasks(self, register, options):
        register(task_named("never"))


EXTRA_ARGUMENT = ExtraArgument()  # loaded by the entry point of the test below


def test_a_plugin_whose_hook_takes_an_argument_the_hook_does_not_pass_is_reported(monkeypatch, fresh_registry):
    real = plugins.entry_points(group=plugins.GROUP)
    strict = EntryPoint(name="strict", value=f"{__name__}:EXTRA_ARGUMENT", group=plugins.GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [strict, *real])
    monkeypatch.setenv("SPCXR_LOAD_PLUGINS", "strict,covid")
    registry = fresh_registry()
    (error,) = registry.errors
    assert "plugin 'strict'" in error and "'options'" in error and "\n" not in error
    assert set(registry.tasks) == {"covid"}


class Backbones:
    """A plugin registering one factory under the given names."""

    def __init__(self, *names, factory):
        self.names, self.factory = names, factory

    @hookimpl
    def register_backbones(self, register):
        for name in self.names:
            register(name, self.factory)


def test_a_backbone_name_registered_twice_keeps_the_first_and_reports_the_second_plugin():
    first, second = Backbones("net", factory=lambda *args, **kwargs: 1), Backbones("net", "other", factory=print)
    registry = collect(manager_with(first=first, second=second))
    (error,) = registry.errors
    assert error.startswith("plugin 'second'") and "'net'" in error and "plugin 'first'" in error
    assert registry.backbones == {"net": first.factory, "other": second.factory}
    assert registry.plugins["first"].backbones == ["net"] and registry.plugins["second"].backbones == ["other"]


def test_a_backbone_without_a_callable_factory_is_reported_with_the_plugin_name():
    registry = collect(manager_with(sloppy=Backbones("net", factory="densenet"), covid=spcxr_covid))
    (error,) = registry.errors
    assert "plugin 'sloppy'" in error and "register_backbones" in error and "callable" in error
    assert registry.backbones == {} and set(registry.tasks) == {"covid"}


def public_api_section() -> str:
    guide = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    return guide.split("## The public API", 1)[1].split("\n## ", 1)[0]


def test_the_plugin_api_exports_exactly_the_names_docs_plugins_md_lists():
    listed = set(re.findall(r"^\| `(\w+)`", public_api_section(), flags=re.MULTILINE))
    assert listed == set(plugin_api.__all__)
    assert {name for name in vars(plugin_api) if not name.startswith("_")} == listed


def test_the_minimal_plugin_of_docs_plugins_md_registers_its_task_and_reads_its_synthetic_data(tmp_path):
    code = re.search(r"```python\n(.*?)```", public_api_section(), flags=re.DOTALL).group(1)
    module = types.ModuleType("spcxr_mini")
    module.__file__ = str(tmp_path / "spcxr_mini" / "__init__.py")
    exec(compile(code, "docs/plugins.md", "exec"), vars(module))
    registry = collect(manager_with(mini=module))
    assert set(registry.tasks) == {"mini"} and not registry.errors
    root = module.TASK.write_synthetic(tmp_path / "data", 2, 0)
    assert [record["label"] for record in module.TASK.read_folder(root, "test")] == [0, 0, 1, 1]
