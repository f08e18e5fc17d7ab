-- memcached proxy (routelib) over two replica pools of memcrab: writes to both, reads from
-- the first that answers (failing over on errors, not on misses). The backends are exactly
-- the pods of the StatefulSets memcrab-0 and memcrab-1 (tests/container/test_k8s.py checks).
-- Scaling a StatefulSet: add its new pods here and roll the proxy.
pools{
    set_a = { backends = { "memcrab-0-0.memcrab-0:11211", "memcrab-0-1.memcrab-0:11211", "memcrab-0-2.memcrab-0:11211" } },
    set_b = { backends = { "memcrab-1-0.memcrab-1:11211", "memcrab-1-1.memcrab-1:11211", "memcrab-1-2.memcrab-1:11211" } },
}
routes{
    cmap = {
        get = route_allfastest{ children = { "set_a", "set_b" } },
        mg  = route_allfastest{ children = { "set_a", "set_b" } },
    },
    default = route_allsync{ children = { "set_a", "set_b" } },
}
