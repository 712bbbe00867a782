"""`python -m cnn_deploy ...` is `cnndeploy ...` (where the package is on PYTHONPATH but not
installed, e.g. scripts/gpu-check.sh on a lent GPU machine)."""

if __name__ == "__main__":
    from cnn_deploy.cli import main

    main()
