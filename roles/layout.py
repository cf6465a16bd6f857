"""Where the appliance puts things on a frontend node. One place, so roles and agents agree."""

ETC = "/etc/appliance"
LIB = "/usr/lib/appliance"
LOG_DIR = "/var/log/appliance"
RUN_DIR = "/run/appliance"
STATE = "/var/lib/appliance"
INSTALL_PREFIX = "/opt/appliance"  # a link to the release in use (production) or the installer's venv (lab)
RELEASES_DIR = "/opt/appliance-releases"  # one venv per wheelhouse; the current and the previous are kept
MANAGER_BIN = f"{INSTALL_PREFIX}/bin/appliance"
WHEEL_DIR = "/var/cache/appliance"
AOE_WRAPPER = f"{LIB}/vblade-wrapper"
MARIADB_SUPERVISOR = f"{LIB}/mariadbd-supervise"  # lab only: no systemd there
PROXY_CONFIG = f"{ETC}/proxy/lighttpd.conf"
PROXY_PIDFILE = f"{RUN_DIR}/proxy.pid"
TLS_DIR = f"{ETC}/tls"
GENERATED_CERTIFICATE = f"{TLS_DIR}/proxy.crt"
GENERATED_KEY = f"{TLS_DIR}/proxy.key"
CIB_FILE = f"{STATE}/cib.xml"
DRBD_DIR = "/etc/drbd.d"
OCF_AGENT = "/usr/lib/ocf/resource.d/appliance/manager"
OCF_PROXY_AGENT = "/usr/lib/ocf/resource.d/appliance/proxy"
NFS_CONFIG = f"{ETC}/nfs/ganesha.conf"  # lab: nfs-ganesha (no kernel NFS server)
NFS_PIDFILE = f"{RUN_DIR}/nfs.pid"  # the agent's; ganesha's own goes to GANESHA_PIDFILE
GANESHA_PIDFILE = f"{RUN_DIR}/ganesha.pid"
NFS_RECOVERY = "/var/lib/nfs/ganesha"
LAB_AOE_FILE = "/srv/aoe/data.img"  # the lab's AoE export: a file, where production exports /dev/drbdN
