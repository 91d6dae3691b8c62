"""The type information shipped with the package: the py.typed marker, and stubs of the
compiled module that name exactly its functions with exactly their parameters (checked
against the signatures pybind11 writes into each docstring)."""

import ast
import os
import re

import gradcore
from gradcore import _core

PACKAGE = os.path.dirname(gradcore.__file__)


def stub_functions():
    tree = ast.parse(open(os.path.join(PACKAGE, "_core.pyi")).read())
    return {node.name: [a.arg for a in node.args.args] for node in tree.body
            if isinstance(node, ast.FunctionDef)}


def module_functions():
    out = {}
    for name in dir(_core):
        if name.startswith("__") or not callable(getattr(_core, name)) or isinstance(getattr(_core, name), type):
            continue
        first_line = (getattr(_core, name).__doc__ or "").strip().splitlines()[0]
        match = re.match(rf"{re.escape(name)}\((.*)\) ->", first_line)
        assert match, f"no pybind11 signature for _core.{name}: {first_line!r}"
        params = match.group(1)
        # parameter names are the identifiers before ': ' at nesting depth 0
        names, depth, token = [], 0, ""
        for ch in params + ",":
            if ch in "[(":
                depth += 1
            elif ch in "])":
                depth -= 1
            if ch == "," and depth == 0:
                if token.strip():
                    names.append(token.split(":")[0].strip())
                token = ""
            else:
                token += ch
        out[name] = names
    return out


def test_py_typed_marker_is_installed():
    assert os.path.isfile(os.path.join(PACKAGE, "py.typed"))


def test_core_stubs_match_the_compiled_module():
    stubs, module = stub_functions(), module_functions()
    assert sorted(stubs) == sorted(module), (
        f"missing from _core.pyi: {sorted(set(module) - set(stubs))}; "
        f"not in _core: {sorted(set(stubs) - set(module))}")
    for name, params in module.items():
        assert stubs[name] == params, f"_core.{name}: stub {stubs[name]} != module {params}"


def test_every_public_name_has_a_docstring():
    for name in gradcore.__all__:
        obj = getattr(gradcore, name)
        assert (obj.__doc__ or "").strip(), f"gradcore.{name} has no docstring"


def test_core_stub_classes_match_the_compiled_module():
    tree = ast.parse(open(os.path.join(PACKAGE, "_core.pyi")).read())
    stubs = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    module = {name for name in dir(_core) if not name.startswith("__") and isinstance(getattr(_core, name), type)}
    assert stubs == module
