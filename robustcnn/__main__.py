"""`python -m robustcnn` = the `robustcnn` command."""
from robustcnn.cli import app

app(prog_name="robustcnn")
