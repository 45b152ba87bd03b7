"""mnist_onnx, CPU-only flavour: model.onnx served by ONNX Runtime inside the
python backend, for Triton builds without the native onnxruntime backend
(the nvidia-pytriton wheel). Same model name, tensors and shapes as the
native ``platform: "onnxruntime_onnx"`` model.

Each ``execute`` call (one dynamic batch) runs as ONE ONNX Runtime call on
the concatenated inputs; the output is split back per request. A failure is
reported on every request of the batch.

Config parameters (written by ``mnist_jobs.repo``):
  onnx_file          file name inside the version directory (model.onnx)
  intra_op_threads   ONNX Runtime intra-op threads (0 = ORT's default)
  allow_spinning     "0": idle ORT threads sleep instead of busy-waiting
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _param(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"],
                            _param(self.model_config, "onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_param(self.model_config, "intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        if _param(self.model_config, "allow_spinning", "1") == "0":
            # idle ORT threads sleep instead of spinning: on a few cores the
            # spinning steals the CPU Triton, the BLS stub and clients need
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if (args.get("model_instance_kind") == "GPU"
                and "CUDAExecutionProvider" in ort.get_available_providers()):
            providers = [("CUDAExecutionProvider",
                          {"device_id": int(args.get("model_instance_device_id", 0))}),
                         "CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, options, providers=providers)
        out_cfg = pb_utils.get_output_config_by_name(self.model_config, "output")
        self.out_dtype = pb_utils.triton_string_to_numpy(out_cfg["data_type"])

    def execute(self, requests):
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy() for r in requests]
            sizes = [a.shape[0] for a in arrays]
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            output = self.session.run(["output"], {"input": np.ascontiguousarray(batch, np.float32)})[0]
        except Exception as exc:
            message = f"mnist_onnx (onnxruntime): {exc}"
            # one TritonError object per response: the backend owns each one
            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
                    for _ in requests]
        responses, offset = [], 0
        for n in sizes:
            tensor = pb_utils.Tensor("output", output[offset:offset + n].astype(self.out_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += n
        return responses
