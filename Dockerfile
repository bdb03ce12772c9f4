# avdet GPU image: the same CLI as a local install, on an official PyTorch CUDA runtime.
#   docker build -t avdet .
#   docker run --gpus all -v "$PWD/videos:/data" -v avdet-cache:/cache -v avdet-weights:/weights \
#       avdet detect /data/clip.mp4 --checkpoint /data/best.ckpt --out /data/events.json --device cuda
# The base carries the torch the tests run on (2.13, pinned again in constraints-docker.txt); TORCH_CUDA picks the
# CUDA flavour of that release's official runtime image.
ARG TORCH_CUDA=cuda12.8-cudnn9-runtime
FROM pytorch/pytorch:2.13.0-${TORCH_CUDA}

# ffmpeg from the distribution's packages (decoding is done by the system ffmpeg); tini as PID 1, so the signal of
# `docker stop` reaches avdet at once (it stops cleanly) instead of the 10 s grace period ending in SIGKILL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:* tini=0.19* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/avdet
# Dependencies first, from pyproject.toml alone: a change to the source reuses this layer (the slow one).
# Installed under constraints-docker.txt: the base's CUDA torch 2.13 satisfies the pins and stays; nothing else
# can move torch or torchvision off the tested versions. The other dependencies carry their ranges in pyproject.toml.
COPY pyproject.toml constraints-docker.txt ./
COPY scripts/requirements.py scripts/
# hadolint ignore=DL3013
RUN python scripts/requirements.py decord hdf5 dist tb > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints-docker.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the whole checkout (less what .dockerignore leaves out): packaging decides what is installed, as for a wheel.
COPY . .
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps -c constraints-docker.txt . \
    && useradd --create-home --uid 1000 avdet \
    && mkdir -p /cache /weights \
    && chown avdet:avdet /cache /weights

USER 1000:1000
ENV AVDET_CACHE=/cache \
    AVDET_WEIGHTS=/weights
VOLUME ["/cache", "/weights"]
WORKDIR /home/avdet
# Smoke step: the CLI imports and answers.
RUN avdet --help > /dev/null
ENTRYPOINT ["/usr/bin/tini", "--", "avdet"]
CMD ["--help"]
