"""Apps on a runner's machine: the operations tools' engine (manifests, runtimes, releases, databases).

The playbooks in `ikoma.runner.builtins.{apps,deploy,db,platform}` are thin: they validate params,
call into this package and shape the `result` step. Nothing here imports the API or the server.
"""
