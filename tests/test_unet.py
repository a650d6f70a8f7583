"""UNet and MLP velocity fields for MNIST: shapes, conditioning, size, one training step."""
import pytest
import torch

from flows_torch.image_mlp import ImageMLP
from flows_torch.unet import UNet, broadcast_time, count_parameters, sinusoidal_embedding

# The default UNet (32 base channels, channel_mult (1, 2, 2), one residual block
# per level, attention in the 7x7 middle block): comparable to the usual
# MNIST flow-matching UNet of about 1.1M parameters.
DEFAULT_UNET_PARAMS = 1_142_337


def tiny_unet(**kw):
    cfg = dict(base_channels=8, channel_mult=(1, 2), attention_resolutions=(14,), num_heads=2)
    cfg.update(kw)
    return UNet(**cfg)


def perturb_output_layer(model, std=0.05):
    """The zero-initialised output layer makes v == 0; perturb it so that the
    dependence checks below can fail."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("out_conv") or ".conv2." in name or ".proj." in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def test_default_parameter_count():
    m = UNet()
    n = count_parameters(m)
    print(f"default UNet parameters: {n:,}")
    assert n == DEFAULT_UNET_PARAMS
    assert 1.0e6 < n < 1.2e6
    assert count_parameters(UNet(attention_resolutions=(14,))) == 1_192_641


def test_zero_init_output():
    m = tiny_unet()
    x = torch.randn(3, 1, 28, 28)
    assert torch.all(m(x, 0.5) == 0)


@pytest.mark.parametrize("factory", [tiny_unet, lambda: ImageMLP(hidden=64, depth=2)])
def test_output_shape_and_time_forms(factory):
    torch.manual_seed(0)
    m = perturb_output_layer(factory())
    x = torch.randn(4, 1, 28, 28)
    y = torch.tensor([0, 3, 9, 10])  # 10 = the null label
    out = m(x, torch.rand(4), y)
    assert out.shape == x.shape and out.dtype == x.dtype
    # a float, a 0-d tensor and an (N,) tensor of equal times agree
    a, b, c = m(x, 0.3, y), m(x, torch.tensor(0.3), y), m(x, torch.full((4,), 0.3), y)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError):
        m(x, torch.rand(3), y)
    with pytest.raises(ValueError):
        m(x, 0.3, torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        m(torch.randn(4, 28, 28), 0.3, y)


@pytest.mark.parametrize("factory", [tiny_unet, lambda: ImageMLP(hidden=64, depth=2)])
def test_output_depends_on_t_and_y(factory):
    torch.manual_seed(0)
    m = perturb_output_layer(factory())
    x = torch.randn(5, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4])
    base = m(x, 0.2, y)
    assert (m(x, 0.8, y) - base).abs().max() > 1e-4
    assert (m(x, 0.2, (y + 5) % 10) - base).abs().max() > 1e-4
    # y=None means the null class
    torch.testing.assert_close(m(x, 0.2, None), m(x, 0.2, torch.full((5,), 10)))
    # samples do not interact (per-sample maps; GroupNorm is per sample)
    torch.testing.assert_close(m(x[:2], 0.2, y[:2]), base[:2], rtol=1e-4, atol=1e-5)


def test_default_unet_forward_and_dependence():
    torch.manual_seed(0)
    m = perturb_output_layer(UNet())
    x = torch.randn(2, 1, 28, 28)
    out = m(x, torch.tensor([0.1, 0.9]), torch.tensor([1, 7]))
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()
    assert (m(x, torch.tensor([0.5, 0.5]), torch.tensor([1, 7])) - out).abs().max() > 1e-4


@pytest.mark.parametrize("factory", [tiny_unet, lambda: ImageMLP(hidden=64, depth=2)])
def test_one_step_lowers_loss_on_fixed_batch(factory):
    torch.manual_seed(0)
    m = factory()
    x1 = torch.rand(16, 1, 28, 28) * 2 - 1
    x0 = torch.randn_like(x1)
    t = torch.rand(16)
    y = torch.arange(16) % 10
    xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
    ut = x1 - x0
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def loss_fn():
        return (m(xt, t, y) - ut).pow(2).mean()

    before = loss_fn()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn()
    assert after < before


def test_bad_configs():
    with pytest.raises(ValueError):
        UNet(image_size=30, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError):
        UNet(base_channels=0)
    with pytest.raises(ValueError):
        ImageMLP(depth=0)


def test_unconditional_unet_ignores_y():
    m = perturb_output_layer(tiny_unet(num_classes=None))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(m(x, 0.4), m(x, 0.4, torch.tensor([1, 2])))


def test_channels_last_matches():
    torch.manual_seed(0)
    m = perturb_output_layer(tiny_unet())
    x = torch.randn(3, 1, 28, 28)
    ref = m(x, 0.4, torch.tensor([1, 2, 3]))
    m2 = m.to(memory_format=torch.channels_last)
    out = m2(x.to(memory_format=torch.channels_last), 0.4, torch.tensor([1, 2, 3]))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_embeddings_helpers():
    e = sinusoidal_embedding(torch.tensor([0.0, 0.5, 1.0]), 16)
    assert e.shape == (3, 16)
    assert torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))
    assert not torch.allclose(e[1], e[2])
    assert broadcast_time(0.25, torch.zeros(4, 1)).tolist() == [0.25] * 4
    with pytest.raises(ValueError):
        sinusoidal_embedding(torch.zeros(2), 7)
