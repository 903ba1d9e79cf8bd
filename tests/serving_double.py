"""Local test doubles of TF Serving's REST and gRPC Predict APIs, backed by a real SavedModel.

REST follows TF Serving's documented API: POST /v1/models/<name>[/versions/<v>]:predict with
`signature_name` and `instances` (row format -> `predictions`; an instance is a bare value for
a one-input signature or `{input name: value}`, every input batch-major) or `inputs` (columnar
-> `outputs`); GET /v1/models/<name>/metadata; errors as HTTP 400/404 with `{"error": "..."}`.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf


class SavedModelBackend:
    def __init__(self, path: str, model_name: str):
        self.model = tf.saved_model.load(path)
        self.name = model_name

    def run(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        if signature not in self.model.signatures:
            raise KeyError(f"Serving signature name: \"{signature}\" not found in signature def")
        fn = self.model.signatures[signature]
        specs = fn.structured_input_signature[1]
        missing = set(specs) - set(inputs)
        if missing:
            raise KeyError(f"missing inputs {sorted(missing)}")
        tensors = {k: tf.constant(np.asarray(v), dtype=specs[k].dtype) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in fn(**tensors).items()}


def rows_to_columns(instances: list) -> dict[str, list]:
    """REST row format -> named inputs: `[{name: value}, ...]` stacks each name's values
    (every instance must name the same inputs); bare values are the one input `images`."""
    if not instances or not isinstance(instances[0], dict):
        return {"images": instances}
    names = set(instances[0])
    if any(set(row) != names for row in instances):
        raise ValueError("instances must all name the same inputs")
    return {name: [row[name] for row in instances] for name in sorted(names)}


def start_rest(backend: SavedModelBackend):
    """Starts the REST double on a free loopback port; returns (server, base_url)."""
    pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/\d+)?(:predict|/metadata)$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            match = pattern.match(self.path)
            if not match or match.group(1) != backend.name:
                self._reply(404, {"error": f"Servable not found for request: {self.path}"})
                return None
            return match.group(2)

        def do_GET(self):
            if self._route() == "/metadata":
                sigs = {k: {"inputs": sorted(v.structured_input_signature[1])}
                        for k, v in backend.model.signatures.items()}
                self._reply(200, {"model_spec": {"name": backend.name},
                                  "metadata": {"signature_def": sigs}})

        def do_POST(self):
            if self._route() != ":predict":
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = body.get("signature_name", "serving_default")
            try:
                if "instances" in body:
                    outputs = backend.run(signature, rows_to_columns(body["instances"]))
                    rows = [{k: v[i].tolist() for k, v in outputs.items()}
                            for i in range(len(body["instances"]))]
                    self._reply(200, {"predictions": rows})
                else:
                    outputs = backend.run(signature, body["inputs"])
                    self._reply(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})
            except (KeyError, ValueError, tf.errors.OpError) as e:
                self._reply(400, {"error": str(e)})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def start_grpc(backend: SavedModelBackend):
    """Starts a gRPC PredictionService double on a free loopback port; returns (server, addr)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != backend.name:
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                outputs = backend.run(request.model_spec.signature_name or "serving_default",
                                      inputs)
            except (KeyError, ValueError, tf.errors.OpError) as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            response = predict_pb2.PredictResponse()
            for k, v in outputs.items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
