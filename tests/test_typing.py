"""The type information shipped with the package: the py.typed marker, and the
signatures of the compiled module's functions (read from the line pybind11 writes into
each docstring), each declared once: in the stub gradcore/_core.pyi, or, for an
operation, by its front door, which takes the binding's parameters in its order."""

import ast
import inspect
import os
import re

import gradcore
from gradcore import _core, _dense, _norms, _rnn

PACKAGE = os.path.dirname(gradcore.__file__)


def stub_functions():
    tree = ast.parse(open(os.path.join(PACKAGE, "_core.pyi")).read())
    return {node.name: [a.arg for a in node.args.args] for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name != "__getattr__"}


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


def front_doors():
    """The documented functions named as the binding they call."""
    return {name: getattr(m, name) for m in (_norms, _dense, _rnn) for name in dir(m)
            if inspect.isfunction(getattr(m, name)) and getattr(m, name).__module__ == m.__name__
            and hasattr(_core, name)}


def test_every_binding_is_declared_once():
    stubs, doors, module = stub_functions(), front_doors(), module_functions()
    assert not set(stubs) & set(doors), f"declared twice: {sorted(set(stubs) & set(doors))}"
    declared = set(stubs) | set(doors)
    assert declared == set(module), (
        f"neither stubbed nor fronted: {sorted(set(module) - declared)}; "
        f"not in _core: {sorted(declared - set(module))}")


def test_core_stubs_match_the_compiled_module():
    module = module_functions()
    for name, params in stub_functions().items():
        assert params == module[name], f"_core.{name}: stub {params} != module {module[name]}"


def test_front_doors_take_the_bindings_parameters():
    module = module_functions()
    assert {"global_norm", "clip_by_global_norm_", "matmul", "rnn_backward"} <= set(front_doors())
    for name, door in front_doors().items():
        params = list(inspect.signature(door).parameters)
        assert params == module[name], f"gradcore.{name}{params} != _core.{name}{module[name]}"


def test_every_public_name_has_a_docstring():
    for name in gradcore.__all__:
        obj = getattr(gradcore, name)
        assert (obj.__doc__ or "").strip(), f"gradcore.{name} has no docstring"


def test_core_stub_classes_match_the_compiled_module():
    tree = ast.parse(open(os.path.join(PACKAGE, "_core.pyi")).read())
    stubs = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    module = {name for name in dir(_core) if not name.startswith("__") and isinstance(getattr(_core, name), type)}
    assert stubs == module
