"""An fp32 ONNX graph -> the same graph in fp16 with LayerNorm and softmax kept in fp32.

The mixed precision lives in the graph itself (what TensorRT's strongly typed networks want: TensorRT 11 has no
precision flags any more): every float weight, constant and cast becomes fp16, every LayerNormalization and Softmax
gets its inputs cast to fp32 and its outputs back to fp16, and the graph's input and outputs stay float32, so
callers see the same interface. Resize's roi and scales inputs stay fp32 (the operator wants them so).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

KEEP_FP32 = ("LayerNormalization", "Softmax")  # the numerically sensitive ops of a transformer
FP32_INPUTS = {"Resize": (1, 2)}  # inputs that are parameters, not data


def to_mixed_fp16(model: Any) -> Any:
    """A converted copy of ``model`` (an onnx.ModelProto); the original is left as it is."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    was_float = {v.name for v in [*inferred.value_info, *inferred.input, *inferred.output]
                 if v.type.tensor_type.elem_type == FLOAT}
    was_float |= {i.name for i in g.initializer if i.data_type == FLOAT}
    for n in g.node:
        if n.op_type == "Constant" and any(a.name == "value" and a.t.data_type == FLOAT for a in n.attribute):
            was_float.add(n.output[0])

    _skip_weight_identities(g)
    uses: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for n in g.node:
        for i, name in enumerate(n.input):
            uses[name].append((n, i))

    def fp32_use(node: Any, idx: int) -> bool:
        return node.op_type in KEEP_FP32 or idx in FP32_INPUTS.get(node.op_type, ())

    # sources used only where fp32 is wanted stay fp32 (LayerNorm's scale and bias keep their exact values)
    sources = {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    stays_fp32 = {name for name in was_float & sources
                  if uses[name] and all(fp32_use(n, i) for n, i in uses[name])}
    graph_io = {v.name for v in [*g.input, *g.output]}
    stays_fp32 -= graph_io

    for init in g.initializer:
        if init.data_type == FLOAT and init.name not in stays_fp32:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for n in g.node:
        keep = n.output and n.output[0] in stays_fp32
        for a in n.attribute:
            if n.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == FLOAT \
                    and not keep:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            elif n.op_type == "Cast" and a.name == "to" and a.i == FLOAT and not keep:
                a.i = HALF

    # the graph's float32 input is cast to fp16 once; its float32 outputs are cast from fp16 twins
    renames: dict[str, str] = {}
    nodes: list[Any] = []
    for v in g.input:
        if v.type.tensor_type.elem_type == FLOAT:
            renames[v.name] = f"{v.name}__fp16"
            nodes.append(helper.make_node("Cast", [v.name], [renames[v.name]], to=HALF, name=f"{v.name}__to_fp16"))
    outputs = {v.name for v in g.output if v.type.tensor_type.elem_type == FLOAT}
    half = (was_float - stays_fp32 - graph_io) | set(renames.values()) | {f"{o}__fp16" for o in outputs}

    to_fp32: dict[str, str] = {}  # fp16 name -> its fp32 cast, made once before its first fp32 use
    for node in g.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)  # the graph's own nodes are replaced below
        for i, name in enumerate(n.input):
            name = renames.get(name, f"{name}__fp16" if name in outputs else name)
            if name in half and fp32_use(n, i):
                if name not in to_fp32:
                    to_fp32[name] = f"{name}__fp32"
                    nodes.append(helper.make_node("Cast", [name], [to_fp32[name]], to=FLOAT, name=f"{name}__to_fp32"))
                name = to_fp32[name]
            n.input[i] = name
        produced = [f"{o}__fp16" if o in outputs else o for o in n.output]
        if n.op_type in KEEP_FP32:  # computed in fp32, handed on in fp16
            n.output[:] = [f"{o}__fp32out" if o else o for o in produced]
            nodes.append(n)
            nodes += [helper.make_node("Cast", [o32], [o], to=HALF, name=f"{o}__back_to_fp16")
                      for o, o32 in zip(produced, n.output) if o]
        else:
            n.output[:] = produced
            nodes.append(n)
        nodes += [helper.make_node("Cast", [f"{o}__fp16"], [o], to=FLOAT, name=f"{o}__to_fp32_out")
                  for o in outputs if f"{o}__fp16" in produced]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # the element types changed; checkers infer them again
    onnx.checker.check_model(out, full_check=True)
    return out


def _skip_weight_identities(g: Any) -> None:
    """The exporter shares equal weights through Identity nodes; consumers read the weight directly instead,
    so that a weight used only by LayerNorms stays fp32."""
    weights = {i.name for i in g.initializer}
    outputs = {v.name for v in g.output}
    alias = {n.output[0]: n.input[0] for n in g.node
             if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs}
    if not alias:
        return
    kept = [n for n in g.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = alias.get(name, name)
    import onnx

    copies = []
    for n in kept:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        copies.append(c)
    del g.node[:]
    g.node.extend(copies)
