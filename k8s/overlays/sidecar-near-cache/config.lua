-- In the application pod: near = the memcrab sidecar, far = the pods of StatefulSet memcrab
-- (tests/container/test_k8s.py checks both against the manifests).
pools{
    near = { backends = { "127.0.0.1:11212" } },
    far  = { backends = { "memcrab-0.memcrab:11211", "memcrab-1.memcrab:11211", "memcrab-2.memcrab:11211" } },
}
routes{
    cmap = {
        get = route_failover{ children = { "near", "far" }, miss = true },
    },
    default = route_allsync{ children = { "near", "far" } },
}
