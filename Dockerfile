# fnpredict on the exact pins of requirements.txt (Python 3.11, CPU).
#   docker build -t fnpredict . && echo 4.1 | docker run -i --rm fnpredict stream
# The versions here are checked against requirements.txt by tests/test_environments.py.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/fnpredict
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY fnpredict ./fnpredict
RUN pip install --no-deps . && useradd --create-home fnpredict
USER fnpredict
ENTRYPOINT ["fnpredict"]
CMD ["--help"]
