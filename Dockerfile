# avdet GPU image: the same CLI as a local install, on an official PyTorch CUDA runtime.
#   docker build -t avdet .
#   docker run --gpus all -v "$PWD/videos:/data" -v avdet-cache:/cache -v avdet-weights:/weights \
#       avdet detect /data/clip.mp4 --checkpoint /data/best.ckpt --out /data/events.json --device cuda
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# ffmpeg from the distribution's packages (decoding is done by the system ffmpeg).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/avdet
# The whole checkout (less what .dockerignore leaves out): packaging decides what is installed, as for a wheel.
COPY . .
# The base image's CUDA torch satisfies the requirement; no CPU constraints here. The package installed is
# this checkout itself, whose dependencies carry their ranges in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[decord,hdf5,dist]' \
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
ENTRYPOINT ["avdet"]
CMD ["--help"]
