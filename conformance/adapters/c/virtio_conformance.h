/* The C ABI a virtio-balloon device under test exports for `virtio-conformance run --dut c:LIB.so`.
 *
 * The suite loads the shared library with ctypes and calls these functions from one thread. Guest
 * memory is one flat buffer owned by the suite: guest-physical address A is mem[A]. The device reads
 * and writes its rings and pages there, exactly as a VMM device does through its memory map.
 *
 * Return values: 0 (or a value) on success; a negative number means the call failed, which the
 * suite reports as an implementation error naming the call. Feature bits are as in virtio 1.2+
 * (balloon bits 0-5, VIRTIO_F_VERSION_1 = 32). Queue indices follow the device's own numbering.
 */
#ifndef VIRTIO_CONFORMANCE_H
#define VIRTIO_CONFORMANCE_H
#include <stdint.h>

#define VC_ABI_VERSION 1

struct vc_device;

int vc_abi_version(void);
struct vc_device *vc_device_new(uint8_t *mem, uint64_t mem_size);
void vc_device_free(struct vc_device *dev);

/* Transport, as the driver sees it (virtio-pci common configuration, in calls). */
uint64_t vc_read_device_features(struct vc_device *dev);
int vc_write_driver_features(struct vc_device *dev, uint64_t features);
int vc_read_status(struct vc_device *dev);
int vc_write_status(struct vc_device *dev, uint8_t status);
uint32_t vc_config_generation(struct vc_device *dev);
int vc_read_config(struct vc_device *dev, uint32_t offset, uint32_t size, uint32_t *value);
int vc_write_config(struct vc_device *dev, uint32_t offset, uint32_t size, uint32_t value);
int vc_queue_max_size(struct vc_device *dev, uint16_t index);            /* 0: no such queue */
int vc_enable_queue(struct vc_device *dev, uint16_t index, uint16_t size,
                    uint64_t desc, uint64_t avail, uint64_t used);
int vc_notify(struct vc_device *dev, uint16_t index);
/* Interrupts raised since the last call: bit i = used buffer notification for queue i. */
uint32_t vc_take_interrupts(struct vc_device *dev, int *config_changed);
/* Let the device do its queue work now. */
int vc_run(struct vc_device *dev);

/* Host (VMM) side. */
int vc_set_target(struct vc_device *dev, uint32_t num_pages);
int64_t vc_hint_start(struct vc_device *dev);                            /* the new command ID */
int vc_hint_stop(struct vc_device *dev);
int vc_hint_done(struct vc_device *dev);
/* Pages the host would skip: bit p (LSB first) of bitmap, for hints accepted since vc_hint_start. */
int vc_hinted_pages(struct vc_device *dev, uint8_t *bitmap, uint64_t bitmap_len);
int vc_request_stats(struct vc_device *dev);                             /* 1: buffer returned */

/* -- Drivers under test -------------------------------------------------------------------------------
 * The suite hosts the driver on its reference device. The driver reaches the device, and the guest's
 * page allocator, only through these callbacks; `ctx` is passed back unchanged. A callback never
 * fails: if the driver breaks a rule, the reference device records it and the suite reports it.
 */
struct vc_transport {
    void *ctx;
    uint64_t (*read_device_features)(void *ctx);
    void (*write_driver_features)(void *ctx, uint64_t features);
    uint8_t (*read_status)(void *ctx);
    void (*write_status)(void *ctx, uint8_t status);
    uint32_t (*read_config)(void *ctx, uint32_t offset, uint32_t size);
    void (*write_config)(void *ctx, uint32_t offset, uint32_t size, uint32_t value);
    uint16_t (*queue_max_size)(void *ctx, uint16_t index);
    void (*enable_queue)(void *ctx, uint16_t index, uint16_t size, uint64_t desc, uint64_t avail,
                         uint64_t used);
    void (*notify)(void *ctx, uint16_t index);
    int64_t (*alloc_pages)(void *ctx, uint32_t count);  /* contiguous guest pages for rings: first page */
    int64_t (*alloc_page)(void *ctx);                   /* a free page for the balloon, or -1 */
    void (*free_page)(void *ctx, uint64_t page);        /* give a page back to the guest */
};

struct vc_driver;

struct vc_driver *vc_driver_new(void);
void vc_driver_free(struct vc_driver *drv);
/* Initialize the device (section 3.1.1); 1 if the device is ready, 0 if it refused the features. */
int vc_driver_probe(struct vc_driver *drv, const struct vc_transport *t, uint8_t *mem, uint64_t mem_size);
/* The device signalled: bit i = queue i, config = configuration change. Work waits for vc_driver_run. */
int vc_driver_interrupt(struct vc_driver *drv, uint32_t queues, int config);
int vc_driver_run(struct vc_driver *drv);

#endif
