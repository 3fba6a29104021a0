"""Makes the example weights with plain PyTorch (no robustcnn), the way a user's own training would:

    python examples/train_my_cnn.py ../shared/data

writes examples/my_cnn_mnist.pt and examples/my_cnn_cifar10.pt (state_dicts).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from my_cnn import small_cnn  # noqa: E402

from robustcnn import load_dataset  # only to read the files; training below is plain torch  # noqa: E402

HERE = Path(__file__).resolve().parent
SETTINGS = {"mnist": ("mnist", (0.1307,), (0.3081,), 2), "cifar10": ("imagefolder:cifar10-png",
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 6)}


def main(root: str) -> None:
    for tag, (dataset, mean, std, epochs) in SETTINGS.items():
        torch.manual_seed(0)
        data = load_dataset(dataset, root=root)
        model = small_cnn(in_channels=data.channels)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(data.y_train))
            for i in range(0, len(order), 128):
                idx = order[i:i + 128]
                loss = F.cross_entropy(model((data.x_train[idx] - m) / s), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model((data.x_test - m) / s).argmax(1) == data.y_test).float().mean().item()
            print(f"{tag} epoch {epoch + 1}: test accuracy {acc:.4f}", flush=True)
        torch.save(model.state_dict(), HERE / f"my_cnn_{tag}.pt")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
