FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kern_tasks ./kern_tasks
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
# The process type is chosen by the command (see Procfile and docker-compose.yml).
CMD ["celery", "-A", "kern_tasks", "worker", "-P", "threads", "-c", "32", "-l", "INFO"]
