"""mnist_bls: a BLS model that keeps the downstream model's batching intact.

The seed's BLS model sent one blocking downstream request per incoming
request, so every downstream call carried batch 1 and the dynamic batcher in
front of the downstream model never had anything to merge. Here each
``execute`` call (one dynamic batch of incoming requests) becomes ONE
downstream request: the inputs are concatenated along the batch axis, sent to
the downstream model, and its output is split back per request in order.
If the downstream call fails, every request of the batch gets the error.

Config parameters (written by ``mnist_jobs.repo``):
  downstream_model            mnist_trt, or mnist_onnx when no engine exists
  downstream_max_batch_size   largest batch one downstream request may carry
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        self.downstream = _param(self.model_config, "downstream_model", "mnist_onnx")
        self.max_batch = int(_param(self.model_config, "downstream_max_batch_size",
                                    self.model_config.get("max_batch_size", 0) or 0))
        out_cfg = pb_utils.get_output_config_by_name(self.model_config, "output")
        self.out_dtype = pb_utils.triton_string_to_numpy(out_cfg["data_type"])
        self.request_kwargs = {}
        if hasattr(pb_utils, "PreferredMemory"):  # ask for outputs in CPU memory
            self.request_kwargs["preferred_memory"] = pb_utils.PreferredMemory(
                pb_utils.TRITONSERVER_MEMORY_CPU, 0)

    def _infer(self, batch):
        step = self.max_batch if self.max_batch > 0 else len(batch)
        parts = []
        for start in range(0, len(batch), step):
            request = pb_utils.InferenceRequest(
                model_name=self.downstream,
                requested_output_names=["output"],
                inputs=[pb_utils.Tensor("input", batch[start:start + step])],
                **self.request_kwargs)
            response = request.exec()
            if response.has_error():
                raise RuntimeError(response.error().message())
            parts.append(pb_utils.get_output_tensor_by_name(response, "output").as_numpy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def execute(self, requests):
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy() for r in requests]
            sizes = [a.shape[0] for a in arrays]
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            output = self._infer(np.ascontiguousarray(batch))
            if output.shape[0] != batch.shape[0]:
                raise RuntimeError(f"returned {output.shape[0]} rows for a batch of {batch.shape[0]}")
        except Exception as exc:  # one error, reported on every request of this batch
            message = f"mnist_bls -> {self.downstream}: {exc}"
            # one TritonError object per response: the backend owns each one
            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
                    for _ in requests]
        responses, offset = [], 0
        for n in sizes:
            tensor = pb_utils.Tensor("output", output[offset:offset + n].astype(self.out_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            offset += n
        return responses
