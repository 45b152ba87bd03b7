"""mnist_pt, python-backend flavour: the traced TorchScript model.pt run by
torch inside the python backend, for Triton builds without the native PyTorch
backend (the nvidia-pytriton wheel). Same model name, tensors and shapes as
the native ``platform: "pytorch_libtorch"`` model.

An instance of kind GPU runs the model on its GPU (``cuda:<device id>``)
when torch sees CUDA, otherwise on the CPU; ``initialize`` logs which. Each
``execute`` call (one dynamic batch) is ONE forward pass on the concatenated
inputs; the output is split back per request. A failure is reported on
every request of the batch.

Config parameters (written by ``mnist_jobs.repo``):
  torchscript_file   file name inside the version directory (model.pt)
"""
import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


def _param(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"],
                            _param(self.model_config, "torchscript_file", "model.pt"))
        on_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = (torch.device("cuda", int(args.get("model_instance_device_id", 0)))
                       if on_gpu else torch.device("cpu"))
        self.model = torch.jit.load(path, map_location=self.device).eval()
        out_cfg = pb_utils.get_output_config_by_name(self.model_config, "output")
        self.out_dtype = pb_utils.triton_string_to_numpy(out_cfg["data_type"])
        where = torch.cuda.get_device_name(self.device) if on_gpu else "CPU"
        pb_utils.Logger.log_info(f"mnist_pt: {args['model_instance_name']} runs on "
                                 f"{self.device} ({where})")

    def execute(self, requests):
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy() for r in requests]
            sizes = [a.shape[0] for a in arrays]
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
                output = self.model(x).cpu().numpy()
        except Exception as exc:
            message = f"mnist_pt (torch on {self.device}): {exc}"
            # one TritonError object per response: the backend owns each one
            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
                    for _ in requests]
        responses, offset = [], 0
        for n in sizes:
            tensor = pb_utils.Tensor("output", output[offset:offset + n].astype(self.out_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += n
        return responses
