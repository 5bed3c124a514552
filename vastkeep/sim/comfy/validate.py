"""``POST /prompt``'s validation, following ComfyUI's ``execution.validate_prompt`` / ``validate_inputs``:
the same error types, messages, ``details`` and ``extra_info`` fields, and the same partial answer (a graph
whose good outputs run while ``node_errors`` names the bad ones).

A link to a node that is not in the graph, or to an output slot the node does not have, is an exception inside
ComfyUI's validation; it is raised and caught here the same way so the answer has the same shape.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from vastkeep.sim.comfy.nodes import NODES

Reasons = list[dict[str, Any]]
Validated = dict[str, tuple[bool, Reasons, str]]


def _err(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _convert(kind: str, val: Any) -> Any:
    if kind == "INT":
        return int(val)
    if kind == "FLOAT":
        return float(val)
    if kind == "STRING":
        return str(val)
    return val


def validate_inputs(
    prompt: dict[str, Any],
    unique_id: str,
    validated: Validated,
    files: list[str],
    has_file: Callable[[str], bool],
) -> tuple[bool, Reasons, str]:
    """One node and (recursively) what it links to; memoised in ``validated`` like ComfyUI's."""
    if unique_id in validated:
        return validated[unique_id]
    inputs = prompt[unique_id].get("inputs") or {}
    node = NODES[prompt[unique_id]["class_type"]]
    spec = node.input_types(files)
    errors: Reasons = []
    valid = True
    for category in ("required", "optional"):
        for x, info in spec.get(category, {}).items():
            if x not in inputs:
                if category == "required":
                    errors.append(
                        _err("required_input_missing", "Required input is missing", x, input_name=x)
                    )
                continue
            val = inputs[x]
            if isinstance(val, list):
                error, linked_ok = _linked_input(prompt, x, info, val, validated, files, has_file)
                valid = valid and linked_ok
            else:
                error = _value_error(node.name, x, info, val, has_file)
            if error is not None:
                errors.append(error)
    result = (False, errors, unique_id) if errors or not valid else (True, [], unique_id)
    validated[unique_id] = result
    return result


def _linked_input(
    prompt: dict[str, Any],
    x: str,
    info: Any,
    val: list[Any],
    validated: Validated,
    files: list[str],
    has_file: Callable[[str], bool],
) -> tuple[dict[str, Any] | None, bool]:
    """A ``[node_id, slot]`` input: (its own error, whether the node it links to validated). A broken linked
    node is recorded in ``validated`` as ComfyUI records it: an exception inside validation."""
    input_type = info[0]
    if len(val) != 2:
        return _err(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            x,
            input_name=x,
            input_config=list(info),
            received_value=val,
        ), True
    o_id = val[0]
    received = NODES[prompt[o_id]["class_type"]].return_types[val[1]]  # KeyError / IndexError
    if received != input_type:
        return _err(
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
            f"{x}, received_type({received}) mismatch input_type({input_type})",
            input_name=x,
            input_config=list(info),
            received_type=received,
            linked_node=val,
        ), True
    try:
        return None, validate_inputs(prompt, o_id, validated, files, has_file)[0] is not False
    except Exception as exc:  # the linked node itself is broken (a dangling link inside it)
        validated[o_id] = (
            False,
            [
                _err(
                    "exception_during_inner_validation",
                    "Exception when validating inner node",
                    str(exc),
                    input_name=x,
                    input_config=list(info),
                    exception_message=str(exc),
                    exception_type=_type_name(exc),
                    traceback=traceback.format_tb(exc.__traceback__),
                    linked_node=val,
                )
            ],
            o_id,
        )
        return None, False


def _value_error(
    node_name: str, x: str, info: Any, val: Any, has_file: Callable[[str], bool]
) -> dict[str, Any] | None:
    """A literal input's first error, in ComfyUI's order: type, min, max, the node's own check, the list."""
    input_type = info[0]
    options = info[1] if len(info) > 1 else {}
    try:
        val = _convert(input_type, val)
    except (TypeError, ValueError) as exc:
        return _err(
            "invalid_input_type",
            f"Failed to convert an input value to a {input_type} value",
            f"{x}, {val}, {exc}",
            input_name=x,
            input_config=list(info),
            received_value=val,
            exception_message=str(exc),
        )
    if "min" in options and val < options["min"]:
        return _err(
            "value_smaller_than_min",
            f"Value {val} smaller than min of {options['min']}",
            x,
            input_name=x,
            input_config=list(info),
            received_value=val,
        )
    if "max" in options and val > options["max"]:
        return _err(
            "value_bigger_than_max",
            f"Value {val} bigger than max of {options['max']}",
            x,
            input_name=x,
            input_config=list(info),
            received_value=val,
        )
    if node_name == "LoadImage":  # VALIDATE_INPUTS: the file must exist, the list is not checked
        if has_file(str(val)):
            return None
        return _err(
            "custom_validation_failed",
            "Custom validation failed for node",
            f"{x} - Invalid image file: {val}",
            input_name=x,
        )
    if isinstance(input_type, list) and val not in input_type:
        listed = str(input_type) if len(input_type) <= 20 else f"(list of length {len(input_type)})"
        return _err(
            "value_not_in_list",
            "Value not in list",
            f"{x}: '{val}' not in {listed}",
            input_name=x,
            input_config=list(info) if len(input_type) <= 20 else None,
            received_value=val,
        )
    return None


def _graph_error(prompt: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The graph's first structural error (a node without ``class_type``, an unknown node, no output), else
    its output nodes."""
    outputs: list[str] = []
    for x, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _err(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{x}'",
            ), []
        if node["class_type"] not in NODES:
            return _err(
                "invalid_prompt",
                f"Cannot execute because node {node['class_type']} does not exist.",
                f"Node ID '#{x}'",
            ), []
        if NODES[node["class_type"]].output_node:
            outputs.append(x)
    if not outputs:
        return _err("prompt_no_outputs", "Prompt has no outputs", ""), []
    return None, outputs


def _validate_output(
    prompt: dict[str, Any], o: str, validated: Validated, files: list[str], has_file: Callable[[str], bool]
) -> tuple[bool, Reasons]:
    try:
        ok, reasons, _ = validate_inputs(prompt, o, validated, files, has_file)
        return ok, reasons
    except Exception as exc:  # a dangling link or slot on the output node itself
        reasons = [
            _err(
                "exception_during_validation",
                "Exception when validating node",
                str(exc),
                exception_type=_type_name(exc),
                traceback=traceback.format_tb(exc.__traceback__),
            )
        ]
        validated[o] = (False, reasons, o)
        return False, reasons


def validate_prompt(
    prompt: Any, files: list[str], has_file: Callable[[str], bool]
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """(valid, error, outputs to execute, node_errors), as ComfyUI's ``validate_prompt`` returns them."""
    if not isinstance(prompt, dict):
        return (
            False,
            _err(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                "Node ID '#'",
            ),
            [],
            {},
        )
    error, outputs = _graph_error(prompt)
    if error is not None:
        return False, error, [], {}
    good: list[str] = []
    failed: list[tuple[str, Reasons]] = []
    node_errors: dict[str, Any] = {}
    validated: Validated = {}
    for o in outputs:
        ok, reasons = _validate_output(prompt, o, validated, files, has_file)
        if ok:
            good.append(o)
            continue
        failed.append((o, reasons))
        for node_id, (node_ok, node_reasons, _) in validated.items():
            if node_ok or not node_reasons:
                continue  # downstream of a bad node: invalid, but not its fault
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(o)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        return (
            False,
            _err("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            [],
            node_errors,
        )
    return True, None, good, node_errors
