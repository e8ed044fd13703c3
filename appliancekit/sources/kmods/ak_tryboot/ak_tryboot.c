// SPDX-License-Identifier: GPL-2.0
/*
 * ak_tryboot: the Raspberry Pi firmware's tryboot flag on `reboot "0 tryboot"`.
 *
 * The firmware boots autoboot.txt's [tryboot] partition once when the flag is set at reset
 * (appliancekit/boot/tryboot.py). Raspberry Pi OS's kernel sets it from a patch to its
 * raspberrypi firmware driver; mainline, and so Debian's kernel, never sends the mailbox
 * call, so an update agent there could arm a trial that would never boot. This module is
 * that patch's behaviour and nothing more: a reboot notifier that sends SET_REBOOT_FLAGS
 * with the tryboot bit when the restart command names "tryboot", through the firmware
 * driver's exported rpi_firmware_property().
 */
#include <linux/module.h>
#include <linux/of.h>
#include <linux/reboot.h>
#include <linux/string.h>
#include <soc/bcm2835/raspberrypi-firmware.h>

/* the firmware's property tag and bit, as Raspberry Pi OS's kernel sends them */
#define AK_SET_REBOOT_FLAGS 0x00038064
#define AK_REBOOT_FLAG_TRYBOOT 0x1

static struct rpi_firmware *firmware;

static int ak_tryboot_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	const char *command = data;
	u32 flags = AK_REBOOT_FLAG_TRYBOOT;
	int ret;

	if (action != SYS_RESTART || !command || !strstr(command, "tryboot"))
		return NOTIFY_DONE;
	ret = rpi_firmware_property(firmware, AK_SET_REBOOT_FLAGS, &flags, sizeof(flags));
	/* the console line is what a test (or a person at the serial port) can see */
	if (ret)
		pr_emerg("ak_tryboot: the firmware refused the tryboot flag (%d)\n", ret);
	else
		pr_emerg("ak_tryboot: tryboot flag set for the next boot\n");
	return NOTIFY_DONE;
}

static struct notifier_block ak_tryboot_notifier = {
	.notifier_call = ak_tryboot_notify,
};

static int __init ak_tryboot_init(void)
{
	struct device_node *node;

	node = of_find_compatible_node(NULL, NULL, "raspberrypi,bcm2835-firmware");
	if (!node)
		return -ENODEV;
	firmware = rpi_firmware_get(node);
	of_node_put(node);
	if (!firmware)
		return -EPROBE_DEFER;
	return register_reboot_notifier(&ak_tryboot_notifier);
}

static void __exit ak_tryboot_exit(void)
{
	unregister_reboot_notifier(&ak_tryboot_notifier);
	rpi_firmware_put(firmware);
}

module_init(ak_tryboot_init);
module_exit(ak_tryboot_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Raspberry Pi firmware tryboot flag on reboot \"0 tryboot\"");
