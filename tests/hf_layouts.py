"""Test-side rewriting of Hugging Face SegFormer weights into the other layouts users bring.

Written from the layout descriptions in shared/docs (field-notes, seed-notes), independently of the
package's own key filters, so that a mistake in one is not mirrored in the other.
"""
from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]


def hf_encoder_to_nvlabs(hf: Tensors, depths: list[int]) -> Tensors:
    """HF `segformer.encoder.*` -> NVlabs MiT names (patch_embed{k}, block{k}.{j}, norm{k}), k = 1..4."""
    out: Tensors = {}
    enc = "segformer.encoder."
    for i in range(4):
        k = i + 1
        pe = f"{enc}patch_embeddings.{i}."
        for p in ("weight", "bias"):
            out[f"patch_embed{k}.proj.{p}"] = hf[f"{pe}proj.{p}"]
            out[f"patch_embed{k}.norm.{p}"] = hf[f"{pe}layer_norm.{p}"]
            out[f"norm{k}.{p}"] = hf[f"{enc}layer_norm.{i}.{p}"]
        for j in range(depths[i]):
            b = f"{enc}block.{i}.{j}."
            n = f"block{k}.{j}."
            for p in ("weight", "bias"):
                out[f"{n}norm1.{p}"] = hf[f"{b}layer_norm_1.{p}"]
                out[f"{n}norm2.{p}"] = hf[f"{b}layer_norm_2.{p}"]
                out[f"{n}attn.q.{p}"] = hf[f"{b}attention.self.query.{p}"]
                out[f"{n}attn.kv.{p}"] = torch.cat([hf[f"{b}attention.self.key.{p}"],
                                                    hf[f"{b}attention.self.value.{p}"]])
                out[f"{n}attn.proj.{p}"] = hf[f"{b}attention.output.dense.{p}"]
                out[f"{n}mlp.fc1.{p}"] = hf[f"{b}mlp.dense1.{p}"]
                out[f"{n}mlp.dwconv.dwconv.{p}"] = hf[f"{b}mlp.dwconv.dwconv.{p}"]
                out[f"{n}mlp.fc2.{p}"] = hf[f"{b}mlp.dense2.{p}"]
                if f"{b}attention.self.sr.{p}" in hf:
                    out[f"{n}attn.sr.{p}"] = hf[f"{b}attention.self.sr.{p}"]
                    out[f"{n}attn.norm.{p}"] = hf[f"{b}attention.self.layer_norm.{p}"]
    return out


def hf_to_nvlabs(hf: Tensors, depths: list[int]) -> dict:
    """A whole NVlabs SegFormer .pth: {'meta': ..., 'state_dict': {backbone.*, decode_head.*}}."""
    sd = {f"backbone.{k}": v for k, v in hf_encoder_to_nvlabs(hf, depths).items()}
    dh = "decode_head."
    for i in range(4):
        for p in ("weight", "bias"):
            sd[f"decode_head.linear_c{i + 1}.proj.{p}"] = hf[f"{dh}linear_c.{i}.proj.{p}"]  # Linear [out, in]
    sd["decode_head.linear_fuse.conv.weight"] = hf[f"{dh}linear_fuse.weight"]
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        sd[f"decode_head.linear_fuse.bn.{p}"] = hf[f"{dh}batch_norm.{p}"]
    for p in ("weight", "bias"):
        sd[f"decode_head.linear_pred.{p}"] = hf[f"{dh}classifier.{p}"]
    # mmseg keeps an unused default classifier
    sd["decode_head.conv_seg.weight"] = torch.zeros_like(hf[f"{dh}classifier.weight"])
    sd["decode_head.conv_seg.bias"] = torch.zeros_like(hf[f"{dh}classifier.bias"])
    return {"meta": {"CLASSES": ["x"]}, "state_dict": sd}


def hf_to_segformer3d(hf: Tensors, depths: list[int], depth_head: Tensors | None = None) -> Tensors:
    """The original Segformer3D bare state_dict; the HF decode head becomes `decoder_head`."""
    nv = hf_encoder_to_nvlabs(hf, depths)
    sd: Tensors = {}
    for k, v in nv.items():
        head, rest = k.split(".", 1)
        idx = int(head[-1]) - 1
        if head.startswith("patch_embed"):
            sd[f"backbone.stages.{idx}.patch_embed.{rest}"] = v
        elif head.startswith("norm"):
            sd[f"backbone.stages.{idx}.norm.{rest}"] = v
        else:  # block{k}.{j}.rest
            j, rest2 = rest.split(".", 1)
            rest2 = (rest2.replace("mlp.fc1", "ffn.fc1").replace("mlp.dwconv.dwconv", "ffn.conv")
                     .replace("mlp.fc2", "ffn.fc2"))
            sd[f"backbone.stages.{idx}.blocks.{j}.{rest2}"] = v

    def head_from_hf(prefix: str, src: Tensors) -> None:
        dh = "decode_head."
        for i in range(4):  # its layers.0 takes stage 4 (1x1 convs)
            sd[f"{prefix}.layers.{3 - i}.weight"] = src[f"{dh}linear_c.{i}.proj.weight"][:, :, None, None]
            sd[f"{prefix}.layers.{3 - i}.bias"] = src[f"{dh}linear_c.{i}.proj.bias"]
        sd[f"{prefix}.linear_fuse.weight"] = src[f"{dh}linear_fuse.weight"]
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            sd[f"{prefix}.bn.{p}"] = src[f"{dh}batch_norm.{p}"]
        sd[f"{prefix}.linear_pred.weight"] = src[f"{dh}classifier.weight"]
        sd[f"{prefix}.linear_pred.bias"] = src[f"{dh}classifier.bias"]

    head_from_hf("decoder_head", hf)
    head_from_hf("depth_head", depth_head if depth_head is not None else hf)
    return sd
