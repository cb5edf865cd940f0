/*
 * Thin C layer between the Rust rdma transport and libibverbs.
 *
 * Why C: ibv_post_send, ibv_poll_cq, ibv_req_notify_cq and ibv_query_port are
 * static inline functions of <infiniband/verbs.h> (they dispatch through the
 * provider's ops table), so no Rust binding can call them without either
 * bindgen's generated wrappers or a C shim. This file is that shim: it is
 * compiled against the system's verbs.h, so every struct layout is the one the
 * installed rdma-core uses, and Rust only sees opaque pointers and the plain
 * structs declared below (mirrored in verbs.rs).
 *
 * Every function returns 0 / a valid pointer on success, else a positive
 * errno (or NULL with *err set). Nothing here allocates memory the caller must
 * free except the handles, each released by its mc_*_destroy/close function.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <infiniband/verbs.h>

struct mc_port {
    uint32_t state;       /* enum ibv_port_state */
    uint32_t active_mtu;  /* enum ibv_mtu */
    uint32_t link_layer;  /* IBV_LINK_LAYER_* */
    uint32_t gid_tbl_len;
    uint16_t lid;
    uint16_t pad;
    uint32_t max_qp_wr;   /* device limits */
    uint32_t max_cqe;
    uint32_t max_qp;
};

struct mc_dev {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *channel;
    struct ibv_cq *cq;
    uint8_t port;
};

int mc_device_count(void) {
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (!list) return 0;
    ibv_free_device_list(list);
    return n;
}

/* Name of device i into buf (NUL-terminated); ENOENT past the end. */
int mc_device_name(int i, char *buf, size_t len) {
    int n = 0, rc = ENOENT;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (!list) return errno ? errno : ENODEV;
    if (i >= 0 && i < n && len > 0) {
        strncpy(buf, ibv_get_device_name(list[i]), len - 1);
        buf[len - 1] = 0;
        rc = 0;
    }
    ibv_free_device_list(list);
    return rc;
}

static int fill_port(struct mc_dev *d, struct mc_port *out) {
    struct ibv_port_attr pa;
    struct ibv_device_attr da;
    if (ibv_query_port(d->ctx, d->port, &pa)) return errno ? errno : EIO;
    if (ibv_query_device(d->ctx, &da)) return errno ? errno : EIO;
    out->state = pa.state;
    out->active_mtu = pa.active_mtu;
    out->link_layer = pa.link_layer;
    out->gid_tbl_len = (uint32_t)pa.gid_tbl_len;
    out->lid = pa.lid;
    out->pad = 0;
    out->max_qp_wr = (uint32_t)da.max_qp_wr;
    out->max_cqe = (uint32_t)da.max_cqe;
    out->max_qp = (uint32_t)da.max_qp;
    return 0;
}

void mc_dev_close(struct mc_dev *d) {
    if (!d) return;
    if (d->cq) ibv_destroy_cq(d->cq);
    if (d->channel) ibv_destroy_comp_channel(d->channel);
    if (d->pd) ibv_dealloc_pd(d->pd);
    if (d->ctx) ibv_close_device(d->ctx);
    free(d);
}

/* Open device `name` on `port` with one CQ of `cqe` entries (plus a
 * completion channel) and one protection domain. */
struct mc_dev *mc_dev_open(const char *name, uint8_t port, int cqe, struct mc_port *out, int *err) {
    int n = 0;
    struct mc_dev *d = NULL;
    struct ibv_device **list = ibv_get_device_list(&n);
    *err = 0;
    if (!list) { *err = errno ? errno : ENODEV; return NULL; }
    for (int i = 0; i < n; i++) {
        if (strcmp(ibv_get_device_name(list[i]), name) != 0) continue;
        d = calloc(1, sizeof(*d));
        if (!d) { *err = ENOMEM; break; }
        d->port = port;
        d->ctx = ibv_open_device(list[i]);
        if (!d->ctx) { *err = errno ? errno : EIO; break; }
        break;
    }
    ibv_free_device_list(list);
    if (!d) { if (!*err) *err = ENODEV; return NULL; }
    if (*err) goto fail;
    if ((*err = fill_port(d, out))) goto fail;
    d->pd = ibv_alloc_pd(d->ctx);
    if (!d->pd) { *err = errno ? errno : EIO; goto fail; }
    d->channel = ibv_create_comp_channel(d->ctx);
    if (!d->channel) { *err = errno ? errno : EIO; goto fail; }
    {
        int flags = fcntl(d->channel->fd, F_GETFL);
        if (flags < 0 || fcntl(d->channel->fd, F_SETFL, flags | O_NONBLOCK) < 0) { *err = errno; goto fail; }
    }
    d->cq = ibv_create_cq(d->ctx, cqe, NULL, d->channel, 0);
    if (!d->cq) { *err = errno ? errno : EIO; goto fail; }
    if (ibv_req_notify_cq(d->cq, 0)) { *err = errno ? errno : EIO; goto fail; }
    return d;
fail:
    mc_dev_close(d);
    return NULL;
}

int mc_dev_query_port(struct mc_dev *d, struct mc_port *out) { return fill_port(d, out); }

/* GID table entry `index`: its 16 bytes and type (0 IB, 1 RoCE v1, 2 RoCE v2). */
int mc_dev_gid(struct mc_dev *d, uint32_t index, uint8_t gid[16], uint32_t *type) {
    struct ibv_gid_entry e;
    if (ibv_query_gid_ex(d->ctx, d->port, index, &e, 0)) return errno ? errno : EIO;
    memcpy(gid, e.gid.raw, 16);
    *type = e.gid_type;
    return 0;
}

struct ibv_mr *mc_reg_mr(struct mc_dev *d, void *addr, size_t len, uint32_t *lkey, uint32_t *rkey, int *err) {
    struct ibv_mr *mr = ibv_reg_mr(d->pd, addr, len,
                                   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
    if (!mr) { *err = errno ? errno : EIO; return NULL; }
    *lkey = mr->lkey;
    *rkey = mr->rkey;
    *err = 0;
    return mr;
}

int mc_dereg_mr(struct ibv_mr *mr) { return ibv_dereg_mr(mr); }

/* An RC QP on the device's CQ, moved to INIT. */
struct ibv_qp *mc_qp_create(struct mc_dev *d, uint32_t max_wr, uint32_t *qpn, int *err) {
    struct ibv_qp_init_attr ia;
    struct ibv_qp_attr a;
    struct ibv_qp *qp;
    memset(&ia, 0, sizeof(ia));
    ia.send_cq = d->cq;
    ia.recv_cq = d->cq;
    ia.qp_type = IBV_QPT_RC;
    ia.sq_sig_all = 1;
    ia.cap.max_send_wr = max_wr;
    ia.cap.max_recv_wr = 1;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    qp = ibv_create_qp(d->pd, &ia);
    if (!qp) { *err = errno ? errno : EIO; return NULL; }
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = d->port;
    a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
        *err = errno ? errno : EIO;
        ibv_destroy_qp(qp);
        return NULL;
    }
    *qpn = qp->qp_num;
    *err = 0;
    return qp;
}

struct mc_remote {
    uint8_t gid[16];
    uint32_t qpn;
    uint32_t psn;
    uint16_t lid;
    uint8_t sgid_index;
    uint8_t mtu;        /* enum ibv_mtu, already min(local, remote) */
    uint8_t timeout;    /* local ACK timeout exponent */
    uint8_t retry_cnt;
    uint8_t rnr_retry;
    uint8_t max_rd_atomic;
    uint32_t local_psn;
};

/* INIT -> RTR -> RTS against the remote QP (always with a GRH: RoCE). */
int mc_qp_connect(struct ibv_qp *qp, uint8_t port, const struct mc_remote *r) {
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = (enum ibv_mtu)r->mtu;
    a.dest_qp_num = r->qpn;
    a.rq_psn = r->psn;
    a.max_dest_rd_atomic = r->max_rd_atomic;
    a.min_rnr_timer = 12;
    a.ah_attr.is_global = 1;
    memcpy(a.ah_attr.grh.dgid.raw, r->gid, 16);
    a.ah_attr.grh.sgid_index = r->sgid_index;
    a.ah_attr.grh.hop_limit = 64;
    a.ah_attr.dlid = r->lid;
    a.ah_attr.port_num = port;
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
        return errno ? errno : EIO;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTS;
    a.timeout = r->timeout;
    a.retry_cnt = r->retry_cnt;
    a.rnr_retry = r->rnr_retry;
    a.sq_psn = r->local_psn;
    a.max_rd_atomic = r->max_rd_atomic;
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                  IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))
        return errno ? errno : EIO;
    return 0;
}

/* Move to ERR: outstanding work requests complete with IBV_WC_WR_FLUSH_ERR. */
int mc_qp_error(struct ibv_qp *qp) {
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_ERR;
    return ibv_modify_qp(qp, &a, IBV_QP_STATE) ? (errno ? errno : EIO) : 0;
}

int mc_qp_destroy(struct ibv_qp *qp) { return ibv_destroy_qp(qp); }

/* One signalled RDMA READ (write == 0) or WRITE of one SGE. */
int mc_post_rw(struct ibv_qp *qp, int write, uint64_t wr_id, uint64_t laddr, uint32_t len,
               uint32_t lkey, uint64_t raddr, uint32_t rkey) {
    struct ibv_sge sge;
    struct ibv_send_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof(wr));
    sge.addr = laddr;
    sge.length = len;
    sge.lkey = lkey;
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = raddr;
    wr.wr.rdma.rkey = rkey;
    return ibv_post_send(qp, &wr, &bad);
}

/* Up to `max` completions into (wr_ids, statuses, qpns). When none is ready,
 * arm the CQ, wait up to `timeout_ms` on the channel, and poll again.
 * Returns the number of completions, or -errno. */
int mc_poll(struct mc_dev *d, int max, uint64_t *wr_ids, uint32_t *statuses, int timeout_ms) {
    struct ibv_wc wc[64];
    int n, i;
    if (max > 64) max = 64;
    for (int round = 0; round < 2; round++) {
        n = ibv_poll_cq(d->cq, max, wc);
        if (n < 0) return -EIO;
        if (n > 0) {
            for (i = 0; i < n; i++) {
                wr_ids[i] = wc[i].wr_id;
                statuses[i] = wc[i].status;
            }
            return n;
        }
        if (round == 1) break;
        {
            struct pollfd p = {.fd = d->channel->fd, .events = POLLIN, .revents = 0};
            int r = poll(&p, 1, timeout_ms);
            if (r < 0) return errno == EINTR ? 0 : -errno;
            if (r > 0) {
                struct ibv_cq *cq;
                void *ctx;
                if (ibv_get_cq_event(d->channel, &cq, &ctx) == 0) ibv_ack_cq_events(cq, 1);
            }
            /* Re-arm before the second poll so no completion slips between. */
            if (ibv_req_notify_cq(d->cq, 0)) return -EIO;
        }
    }
    return 0;
}
