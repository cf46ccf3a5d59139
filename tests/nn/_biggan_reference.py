"""BigGAN-PyTorch's spectrally normalised layers, restated for the tests (any num_svs and
num_itrs): buffers u{i} [1, out] and sv{i} [1]; per step and singular value i,
v = normalize(gs(u W)), u = normalize(gs(v W^T)), sv = v W^T u^T with Gram-Schmidt gs
against the earlier vectors; u{i} stored in training mode only; the layer uses W / sv0.
Every call restarts from the stored u, so in eval mode num_itrs steps equal one."""

import torch
import torch.nn.functional as F
from torch import nn


def _gs(x, ys):
    for y in ys:
        x = x - (y @ x.t()) * y / (y @ y.t())
    return x


class RefSN:
    def _init(self, num_svs, num_itrs, num_outputs, eps=1e-12):
        self.num_svs, self.num_itrs, self.eps = num_svs, num_itrs, eps
        for i in range(num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))
            self.register_buffer(f"sv{i}", torch.ones(1))

    def _one_pass(self, W):
        us, vs, svs = [], [], []
        for i in range(self.num_svs):
            u_buf = getattr(self, f"u{i}")
            with torch.no_grad():
                v = F.normalize(_gs(u_buf @ W, vs), eps=self.eps)
                vs.append(v)
                u = F.normalize(_gs(v @ W.t(), us), eps=self.eps)
                us.append(u)
                if self.training:
                    u_buf[:] = u
            svs.append(torch.squeeze(v @ W.t() @ u.t()))
        return svs

    def W_(self):
        W = self.weight.view(self.weight.size(0), -1)
        for _ in range(self.num_itrs):
            svs = self._one_pass(W)
        if self.training:
            with torch.no_grad():
                for i, sv in enumerate(svs):
                    getattr(self, f"sv{i}")[:] = sv
        return self.weight / svs[0]


class RefSNConv2d(nn.Conv2d, RefSN):
    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, num_svs=1, num_itrs=1, eps=1e-12):
        nn.Conv2d.__init__(self, in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias)
        self._init(num_svs, num_itrs, out_ch, eps)

    def forward(self, x):
        return F.conv2d(x, self.W_(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class RefSNLinear(nn.Linear, RefSN):
    def __init__(self, in_features, out_features, bias=True, num_svs=1, num_itrs=1, eps=1e-12):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init(num_svs, num_itrs, out_features, eps)

    def forward(self, x):
        return F.linear(x, self.W_(), self.bias)


class RefSNEmbedding(nn.Embedding, RefSN):
    def __init__(self, num_embeddings, embedding_dim, num_svs=1, num_itrs=1, eps=1e-12):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self._init(num_svs, num_itrs, num_embeddings, eps)

    def forward(self, x):
        return F.embedding(x, self.W_())


class SmallD(nn.Module):
    """A tiny projection discriminator built from any family of SN layers."""

    def __init__(self, conv, linear, embed, num_svs=1, num_itrs=1, ch=6, classes=5):
        super().__init__()
        kw = dict(num_svs=num_svs, num_itrs=num_itrs)
        self.conv1 = conv(3, ch, 3, padding=1, **kw)
        self.conv2 = conv(ch, 2 * ch, 3, padding=1, **kw)
        self.shortcut = conv(3, 2 * ch, 1, **kw)
        self.linear = linear(2 * ch, 1, **kw)
        self.embed = embed(classes, 2 * ch, **kw)

    def forward(self, x, y):
        h = self.conv2(F.relu(self.conv1(x))) + self.shortcut(x)
        h = F.relu(h).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)
