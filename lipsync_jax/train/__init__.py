"""Training: configs, jitted steps, sharding, checkpoints and the loop.

    from lipsync_jax.train import train_lib
    train_lib.train_and_evaluate(config, workdir)
"""
