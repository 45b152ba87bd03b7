"""What the test tiers stand on, apart from the tests themselves:

    control_plane     a real kube-apiserver, etcd, controller-manager, scheduler and KWOK on loopback
    operator_process  `mnist-serving operator` as a subprocess, and the resource helpers the tests use
    namespaces        a real cluster's rules for a test namespace (restricted Pod Security, a compute quota)
    node              one real kubelet + containerd node on this machine, and the images it runs
"""
