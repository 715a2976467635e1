"""3D Gaussians: model, rasterization backends (gsplat CUDA, torch reference), losses, strategies, training, IO."""
