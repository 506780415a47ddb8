#!/usr/lib/vessel/busybox sh
# udhcpc event script of the Vessel guest init: configures the lease and reports it once as
# "VESSEL-NET IFACE ADDRESS/PREFIX" on the console.
BB=/usr/lib/vessel/busybox

prefix_of() {
    _n=0
    for _o in $(echo "$1" | $BB tr . ' '); do
        case "$_o" in
            255) _n=$((_n + 8)) ;; 254) _n=$((_n + 7)) ;; 252) _n=$((_n + 6)) ;;
            248) _n=$((_n + 5)) ;; 240) _n=$((_n + 4)) ;; 224) _n=$((_n + 3)) ;;
            192) _n=$((_n + 2)) ;; 128) _n=$((_n + 1)) ;;
        esac
    done
    echo $_n
}

case "$1" in
    deconfig)
        $BB ip -4 addr flush dev "$interface"
        $BB ip link set "$interface" up
        ;;
    bound | renew)
        _prefix=${mask:-$(prefix_of "$subnet")}
        _old=$($BB ip -4 -o addr show dev "$interface" | $BB awk '{print $4}')
        if [ "$_old" != "$ip/$_prefix" ]; then
            $BB ip -4 addr flush dev "$interface"
            $BB ip -4 addr add "$ip/$_prefix" ${broadcast:+broadcast $broadcast} dev "$interface"
        fi
        if [ -n "$router" ]; then
            while $BB ip -4 route del default dev "$interface" 2>/dev/null; do :; done
            for _r in $router; do
                $BB ip -4 route add default via "$_r" dev "$interface" && break
            done
        fi
        if [ -n "$dns" ]; then
            {
                [ -n "$domain" ] && echo "search $domain"
                for _d in $dns; do echo "nameserver $_d"; done
            } >/etc/resolv.conf.vessel && $BB mv /etc/resolv.conf.vessel /etc/resolv.conf
        fi
        [ "$1" = bound ] && echo "VESSEL-NET $interface $ip/$_prefix" >"${VESSEL_CONSOLE:-/dev/console}"
        ;;
esac
exit 0
